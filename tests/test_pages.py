"""Browser pages through the Flask test client (tiny random models from conftest)."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import pytest

from tests.conftest import png_bytes, upload
from webapp import pages
from webapp.gallery import get_gallery
from webapp.render.sizes import CARD_WIDTH
from webapp.storage import ID_PATTERN

Tag = tuple[str, dict[str, str]]


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script>/<style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[Tag] = []
        self.inline_code: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        self._open = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline_code.append(data)


def parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def meta(html: str) -> dict[str, str]:
    """`property`/`name` -> `content` of the page's <meta> tags."""
    return {
        attrs.get("property") or attrs.get("name", ""): attrs.get("content", "")
        for tag, attrs in parse(html).tags
        if tag == "meta"
    }


def csrf_token(client) -> str:
    html = client.get("/").get_data(as_text=True)
    return meta(html)["csrf-token"]


def upload_many(client, count: int) -> list[dict]:
    """Upload `count` different PNGs through the API; their JSON, oldest first."""
    return [upload(client, png_bytes(seed=seed)) for seed in range(count)]


def card_ids(html: str) -> list[str]:
    return re.findall(rf'id="card-({ID_PATTERN.pattern})"', html)


def test_empty_gallery_invites_an_upload(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "No images yet" in html
    assert card_ids(html) == []


def test_gallery_shows_cards_newest_first_with_sizes(client):
    first, second = upload_many(client, 2)
    html = client.get("/").get_data(as_text=True)
    assert card_ids(html) == [second["id"], first["id"]]
    imgs = [a for t, a in parse(html).tags if t == "img" and "/i/" in a.get("src", "")]
    thumbs = [a for a in imgs if a.get("class") != "preview"]
    assert len(thumbs) == 2
    # placeholders first: renders waiting on decodes must not hold the browser's connections
    assert {a["fetchpriority"] for a in imgs if a.get("class") == "preview"} == {"high"}
    for attrs in thumbs:
        assert re.search(rf"\.avif\?w={CARD_WIDTH}&v=[0-9a-f]{{16,24}}$", attrs["src"])
        assert attrs["loading"] == "lazy" and attrs["fetchpriority"] == "low"
        assert int(attrs["width"]) > 0 and int(attrs["height"]) > 0
    assert re.search(r"\d+(\.\d)?\N{MULTIPLICATION SIGN} (smaller|larger)", html)
    assert re.search(r"\d+(\.\d+)? (B|KB)", html)


def test_load_more_pages_with_htmx_and_plain_links(client, monkeypatch):
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    oldest, *_ = upload_many(client, 3)
    html = client.get("/").get_data(as_text=True)
    assert len(card_ids(html)) == 2
    (more,) = [a for t, a in parse(html).tags if t == "a" and "hx-get" in a]
    assert more["hx-get"].startswith("/fragments/cards?cursor=")
    assert more["hx-swap"] == "outerHTML"
    assert more["href"].startswith("/?cursor=")

    fragment = client.get(more["hx-get"]).get_data(as_text=True)
    assert card_ids(fragment) == [oldest["id"]]
    assert "<html" not in fragment and "Load more" not in fragment
    assert card_ids(client.get(more["href"]).get_data(as_text=True)) == [oldest["id"]]


def test_card_fragment(client):
    image = upload(client)
    response = client.get(f"/fragments/card/{image['id']}")
    assert response.status_code == 200
    assert card_ids(response.get_data(as_text=True)) == [image["id"]]
    assert client.get("/fragments/card/nope").status_code == 404


def test_image_page_facts_and_social_tags(client):
    image = upload(client)
    response = client.get(f"/i/{image['id']}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    tags = meta(html)
    page_url = f"http://localhost/i/{image['id']}"
    assert tags["og:url"] == page_url
    assert tags["og:image"] == image["png_url"]
    assert image["png_url"].startswith(f"{page_url}.png?v=")
    assert tags["twitter:image"] == tags["og:image"]
    assert tags["twitter:card"] == "summary_large_image"
    assert (tags["og:image:width"], tags["og:image:height"]) == ("64", "48")
    assert f'value="{page_url}"' in html  # the share link
    assert f'href="{image["png_url"]}" download' in html
    assert f'/i/{image["id"]}.sdz"' in html
    assert "64 \N{MULTIPLICATION SIGN} 48 px" in html and "Bits per pixel" in html
    assert "No pixels, EXIF or GPS data are kept" in html


def test_htmx_comes_from_the_package_with_its_version_and_immutable_caching(client):
    scripts = [
        a["src"] for t, a in parse(client.get("/").get_data(as_text=True)).tags if t == "script"
    ]
    (htmx_url,) = [src for src in scripts if "htmx" in src]
    assert pages.HTMX_VERSION.startswith("2.") and pages.HTMX_VERSION in htmx_url
    response = client.get(htmx_url)
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.data == pages.HTMX_FILE.read_bytes()
    cache = response.headers["Cache-Control"]
    assert {"public", "max-age=31536000", "immutable"} <= {p.strip() for p in cache.split(",")}


def test_own_assets_have_content_hash_urls(client):
    tags = parse(client.get("/").get_data(as_text=True)).tags
    urls = [a.get("src") or a.get("href") for t, a in tags if t in ("script", "link")]
    for name in ("app.js", "app.css"):
        (url,) = [u for u in urls if f"/static/{name}" in u]
        assert re.search(r"\?v=[0-9a-f]{12}$", url)
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("path", ["/", "/i/{id}", "/i/missing-image-id"])
def test_pages_are_csp_safe(client, path):
    image = upload(client)
    html = client.get(path.format(id=image["id"])).get_data(as_text=True)
    parsed = parse(html)
    assert parsed.inline_code == []
    for tag, attrs in parsed.tags:
        assert tag != "style"
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith(("on", "hx-on"))], tag
        if tag == "script":
            assert attrs["src"].startswith("/static/")


def test_missing_image_gets_a_friendly_404_page(client):
    response = client.get("/i/this-image-does-not-exist")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "404" in html and "Back to the gallery" in html


def test_no_js_upload_shows_its_key_once_on_an_uncached_page_and_never_in_a_cookie(client):
    token = csrf_token(client)
    response = client.post(
        "/upload", data={"csrf_token": token, "file": (io.BytesIO(png_bytes()), "a.png")}
    )
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/uploaded?job=")
    cookies = " ".join(response.headers.getlist("Set-Cookie"))
    result = client.get(response.headers["Location"])
    assert result.headers["Cache-Control"] == "no-store"
    html = result.get_data(as_text=True)
    ((image_id, key),) = re.findall(r'data-image-id="([^"]+)" data-delete-key="([^"]+)"', html)
    assert key not in cookies + " ".join(result.headers.getlist("Set-Cookie"))
    assert f'href="/i/{image_id}"' in html
    assert "data-delete-key" not in client.get(response.headers["Location"]).get_data(as_text=True)
    deleted = client.delete(
        f"/api/images/{image_id}", headers={"X-Delete-Key": key, "X-CSRF-Token": token}
    )
    assert deleted.status_code == 204


def test_no_js_upload_of_several_files_lists_each_with_its_key(client):
    files = [(io.BytesIO(png_bytes(seed=s)), f"{s}.png") for s in range(2)]
    response = client.post("/upload", data={"csrf_token": csrf_token(client), "file": files})
    assert response.status_code == 303
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    keys = dict(re.findall(r'data-image-id="([^"]+)" data-delete-key="([^"]+)"', html))
    assert sorted(keys) == sorted(card_ids(client.get("/").get_data(as_text=True)))
    assert len(keys) == 2


def test_no_js_upload_errors_are_html_pages(client):
    token = csrf_token(client)
    not_image = client.post(
        "/upload", data={"csrf_token": token, "file": (io.BytesIO(b"hello"), "a.jpg")}
    )
    assert not_image.status_code == 400
    assert not_image.mimetype == "text/html"
    assert client.post("/upload", data={"csrf_token": token}).status_code == 400
    no_token = client.post("/upload", data={"file": (io.BytesIO(png_bytes()), "a.png")})
    assert no_token.status_code == 403
    assert "Back to the gallery" in no_token.get_data(as_text=True)


def test_a_broken_cursor_is_a_400_page(client):
    response = client.get("/?cursor=not-a-cursor")
    assert response.status_code == 400
    assert "Back to the gallery" in response.get_data(as_text=True)


def test_no_js_uploads_are_rate_limited(make_app):
    client = make_app(upload_rate=(1, 3600.0)).test_client()
    token = csrf_token(client)
    for expected in (303, 429):
        data = {"csrf_token": token, "file": (io.BytesIO(png_bytes()), "a.png")}
        response = client.post("/upload", data=data)
        assert response.status_code == expected
    assert "Retry-After" in response.headers
    assert "Back to the gallery" in response.get_data(as_text=True)


def test_too_large_no_js_upload_is_a_413_page(make_app):
    client = make_app(max_upload_bytes=10_000).test_client()
    data = {"csrf_token": csrf_token(client), "file": (io.BytesIO(bytes(20_000)), "big.png")}
    response = client.post("/upload", data=data)
    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert "Back to the gallery" in response.get_data(as_text=True)


def test_the_gallery_answers_without_loading_the_models(make_app, env):
    """Start-up: the gallery's HTML, its previews and its URLs need no model; the thumbnails'
    URLs name the same version before and after the models load, so none is redirected."""
    stored = upload(make_app().test_client(), png_bytes(600, 400))
    app = make_app(codec=None)  # a restart, on the tiny weights the environment names
    host = get_gallery(app).codec_host
    client = app.test_client()
    page = parse(client.get("/").get_data(as_text=True))
    cards = [
        attrs for tag, attrs in page.tags
        if tag == "img" and stored["id"] in attrs["src"] and attrs.get("class") != "preview"
    ]  # fmt: skip
    assert not host.loaded and host.attempts == 0
    assert client.get(f"/i/{stored['id']}.preview.webp").status_code == 200
    assert not host.loaded and host.attempts == 0
    thumbnail = cards[0]["src"]
    response = client.get(thumbnail)
    assert response.status_code == 200 and response.mimetype == "image/avif"
    assert host.loaded and host.attempts == 1
    assert parse(client.get("/").get_data(as_text=True)).tags == page.tags
