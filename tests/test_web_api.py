"""The JSON API through the Flask test client: upload, list, get, delete, refusals."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from werkzeug.exceptions import MethodNotAllowed

from tests.conftest import encode, metric, noise, png_bytes, post_images, snapshot, upload
from tests.servers import free_port
from webapp.gallery import get_gallery
from webapp.storage import ID_PATTERN, STORE_MARKER

IMAGE_FIELDS = {
    "id", "page_url", "png_url", "latent_url", "width", "height", "source_width", "source_height",
    "uploaded_bytes",
    "latent_bytes", "stored_bytes", "display_url", "bits_per_pixel", "created_at", "method",
}  # fmt: skip


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid 1-bit PNG of `width` x `height` zero pixels, ~100 KB compressed."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = (b"\0" * (1 + -(-width // 8))) * 1000
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(rows) for _ in range(height // 1000)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_upload_get_list_and_delete(client, app):
    content = png_bytes(80, 56)
    image = upload(client, content, "photo.png")
    assert set(image) == IMAGE_FIELDS | {"delete_key"}
    assert (image["width"], image["height"], image["uploaded_bytes"]) == (80, 56, len(content))
    version = get_gallery(app).codec_host.codec.version
    assert image["png_url"] == f"http://localhost/i/{image['id']}.png?v={version}"
    assert image["page_url"] == f"http://localhost/i/{image['id']}"
    assert ID_PATTERN.fullmatch(image["id"]) and len(image["delete_key"]) >= 32

    fetched = client.get(f"/api/images/{image['id']}").get_json()
    assert fetched == {k: v for k, v in image.items() if k != "delete_key"}
    assert client.get("/api/images").get_json()["images"] == [fetched]
    latent = client.get(f"/i/{image['id']}.sdz")
    assert len(latent.data) == image["latent_bytes"] == image["stored_bytes"]  # small: no display
    display = client.get(image["display_url"].removeprefix("http://localhost"))
    assert display.status_code == 200 and display.mimetype == "image/avif"

    response = client.delete(
        f"/api/images/{image['id']}", headers={"X-Delete-Key": image["delete_key"]}
    )
    assert response.status_code == 204
    assert client.get(f"/api/images/{image['id']}").status_code == 404
    assert client.get(f"/i/{image['id']}.png").status_code == 404
    assert client.get("/api/images").get_json()["images"] == []
    assert snapshot(app) == (["gallery.sqlite3", f"latents/{STORE_MARKER}"], [])


def test_several_files_per_post_with_per_file_errors(client):
    response = post_images(client, (png_bytes(seed=1), "good.png"), (b"not an image", "bad.jpg"))
    assert response.status_code == 201
    body = response.get_json()
    assert len(body["images"]) == 1
    [error] = body["errors"]
    assert error["filename"] == "bad.jpg" and error["status"] == 400
    assert "not an image in an allowed format" in error["message"]


def test_all_files_refused_answers_the_error_status(client):
    response = post_images(client, (b"", "empty.png"))
    assert response.status_code == 400
    body = response.get_json()
    assert body["images"] == [] and body["error"]["status"] == 400
    assert body["errors"][0]["message"] == "The file is empty."
    assert client.post("/api/images", data={}).status_code == 400


def test_pagination_newest_first_with_an_opaque_cursor(client):
    response = post_images(client, *[(png_bytes(seed=i), f"{i}.png") for i in range(5)])
    uploaded = [image["id"] for image in response.get_json()["images"]]
    seen, cursor = [], None
    for expected_size in (2, 2, 1):
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/images", query_string=query).get_json()
        assert len(page["images"]) == expected_size
        seen += [image["id"] for image in page["images"]]
        cursor = page["next_cursor"]
        assert (cursor is None) == (expected_size == 1)
        assert ("delete_key" in page["images"][0]) is False
    assert seen == uploaded[::-1]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=x", "cursor=bogus", "cursor=djI6MQ"]
)
def test_bad_list_queries_are_400(client, query):
    response = client.get(f"/api/images?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["status"] == 400


def truncated_jpeg() -> bytes:
    data = encode(noise(256, 256), "JPEG", quality=90)
    return data[: len(data) // 2]


BAD_UPLOADS = {
    "text renamed .jpg": lambda: (b"Just some text, honest.\n" * 40, "photo.jpg"),
    "1 MB random blob": lambda: (np.random.default_rng(0).bytes(2**20), "blob.png"),
    "truncated JPEG": lambda: (truncated_jpeg(), "cut.jpg"),
    "30000x30000 PNG bomb": lambda: (png_bomb(), "bomb.png"),
    "SVG (not on the allowlist)": lambda: (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "a.svg"),
}


@pytest.mark.parametrize("make", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_bad_uploads_are_400_and_change_nothing(client, app, make):
    upload(client)
    before = snapshot(app)
    response = post_images(client, make())
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["message"]
    assert snapshot(app) == before


def test_pixel_limit_message(client):
    message = post_images(client, (png_bomb(), "bomb.png")).get_json()["error"]["message"]
    assert "over the limit of 50,000,000 pixels" in message


def test_30_mb_upload_is_413_and_changes_nothing(client, app):
    upload(client)
    before = snapshot(app)
    response = post_images(client, (b"\xff" * (30 * 2**20), "huge.jpg"))
    assert response.status_code == 413
    assert response.get_json()["error"]["status"] == 413
    assert snapshot(app) == before


def test_wrong_or_missing_delete_key_is_403_and_deletes_nothing(client, app):
    image = upload(client)
    before = snapshot(app)
    for headers in ({"X-Delete-Key": "wrong"}, {}, {"X-Delete-Key": image["delete_key"] + "x"}):
        response = client.delete(f"/api/images/{image['id']}", headers=headers)
        assert response.status_code == 403
        assert response.get_json()["error"]["title"] == "Forbidden"
    assert snapshot(app) == before
    assert (
        client.delete(
            "/api/images/AAAAAAAAAAAAAAAAAAAAAA", headers={"X-Delete-Key": "k"}
        ).status_code
        == 404
    )


def test_only_a_hash_of_the_delete_key_is_stored(client, app):
    image = upload(client)
    database = (get_gallery(app).settings.data / "gallery.sqlite3").read_bytes()
    assert image["delete_key"].encode() not in database


def test_csrf_token_required_once_the_browser_has_a_session(client):
    client.get("/")  # the page puts a CSRF token in the session
    with client.session_transaction() as session:
        token = session["csrf_token"]
    files = {"file": (io.BytesIO(png_bytes()), "a.png")}
    assert client.post("/api/images", data=files).status_code == 403
    files = {"file": (io.BytesIO(png_bytes()), "a.png")}
    bad = client.post("/api/images", data=files, headers={"X-CSRF-Token": "forged"})
    assert bad.status_code == 403
    files = {"file": (io.BytesIO(png_bytes()), "a.png")}
    assert (
        client.post("/api/images", data=files, headers={"X-CSRF-Token": token}).status_code == 201
    )


def test_api_clients_without_a_session_need_no_token_but_cross_site_browsers_are_refused(client):
    assert post_images(client, (png_bytes(), "a.png")).status_code == 201
    cross = post_images(client, (png_bytes(), "a.png"), headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403


def test_upload_rate_limit_counts_files_and_is_429_with_retry_after(make_app):
    client = make_app(upload_rate=(3, 60.0)).test_client()
    assert post_images(client, (png_bytes(seed=1), "a.png")).status_code == 201
    two = post_images(client, (png_bytes(seed=2), "b.png"), (png_bytes(seed=3), "c.png"))
    assert two.status_code == 201 and len(two.get_json()["images"]) == 2
    response = post_images(client, (png_bytes(seed=4), "d.png"))
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60  # a moving window of 60 s
    assert response.get_json()["error"]["status"] == 429
    assert "at most 3 files per 60 s" in response.get_json()["error"]["message"]
    assert metric(client, "latent_gallery_rejected_requests_total", 'reason="rate_limit"') == 1


def test_upload_rate_limit_counts_megapixels_as_stored(make_app):
    """A budget of 5 megapixels a minute: a 3000x2000 photo stored at 1500x1000 costs 2, so
    two go in and the third is refused, naming the megapixel budget."""
    client = make_app(upload_megapixels=(5, 60.0), max_side=1500).test_client()
    photo = encode(noise(3000, 2000), "JPEG")
    statuses = [post_images(client, (photo, f"{n}.jpg")).status_code for n in range(2)]
    assert statuses == [201, 201]
    refused = post_images(client, (photo, "2.jpg"))
    assert refused.status_code == 429
    assert "at most 5 megapixels per 60 s" in refused.get_json()["error"]["message"]
    stored = client.get("/api/images").get_json()["images"]
    assert [(i["width"], i["height"]) for i in stored] == [(1500, 1000)] * 2


def test_uploads_are_not_refused_while_the_rate_limit_store_is_unreachable(make_app, caplog):
    app = make_app(upload_rate=(1, 60.0), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    for seed in range(2):
        assert post_images(app.test_client(), (png_bytes(seed=seed), "a.png")).status_code == 201
    assert "upload rate limit not applied" in caplog.text


@pytest.mark.parametrize("hops", [0, 1])
def test_the_rate_limit_counts_the_forwarded_client_only_behind_trusted_proxies(make_app, hops):
    client = make_app(upload_rate=(1, 60.0), trusted_proxies=hops).test_client()

    def status(address: str) -> int:
        headers = {"X-Forwarded-For": address}
        return post_images(client, (png_bytes(), "a.png"), headers=headers).status_code

    assert [status("192.0.2.1"), status("192.0.2.1")] == [201, 429]
    assert status("192.0.2.2") == (429 if hops == 0 else 201)


def test_errors_are_json_under_api_and_html_elsewhere(client):
    api = client.put("/api/images")
    assert api.status_code == 405 and api.is_json
    assert "POST" in api.headers["Allow"]
    assert api.get_json() == {
        "error": {
            "status": 405,
            "title": "Method Not Allowed",
            "message": MethodNotAllowed.description,
        }
    }
    page = client.get("/no/such/page")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert client.get("/api/images/nope").get_json()["error"]["status"] == 404


@pytest.mark.parametrize("path", ["/api/images", "/", "/no/such/page", "/api/images/nope"])
def test_security_headers(client, path):
    """Pages, the API and errors alike: scripts, styles and everything else from this site
    only, images also as `data:` URLs, never framed, no sniffing, no full URL sent away."""
    headers = client.get(path).headers
    policy = [directive.split() for directive in headers["Content-Security-Policy"].split(";")]
    assert {name: sources for name, *sources in policy} == {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'self'"],
    }
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_uploads_keep_no_exif_or_gps(client, app):
    exif = Image.Exif()
    exif[0x010F] = "SecretCamCorp"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS IFD
    content = encode(noise(96, 64), "JPEG", exif=exif)
    assert Image.open(io.BytesIO(content)).getexif().get_ifd(0x8825)
    image = upload(client, content, "gps.jpg")

    latent = client.get(f"/i/{image['id']}.sdz").data
    png = client.get(f"/i/{image['id']}.png").data
    for stored in (latent, png, (get_gallery(app).settings.data / "gallery.sqlite3").read_bytes()):
        assert b"SecretCamCorp" not in stored and b"Exif" not in stored
    rendered = Image.open(io.BytesIO(png))
    assert not rendered.getexif() and "exif" not in rendered.info
