"""Hardening: cross-site writes refused by `Origin`/`Referer`, URLs from `BASE_URL` never from
`Host`, Secure cookies behind HTTPS, ids matched whole (Flask test client, tiny codec)."""

from __future__ import annotations

import io

import pytest

from tests.conftest import png_bytes, post_images, rows, upload
from tests.test_pages import csrf_token, meta
from webapp.storage import is_valid_id


def form(token: str | None = None) -> dict:
    """The no-JS upload form's fields with one PNG."""
    fields = {"file": (io.BytesIO(png_bytes()), "a.png")}
    return fields if token is None else {**fields, "csrf_token": token}


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page.html"},
        {"Origin": "http://localhost.evil.example"},
    ],
)
def test_a_cross_site_form_upload_is_403_and_stores_nothing(app, client, headers):
    assert client.post("/upload", data=form(), headers=headers).status_code == 403
    token = csrf_token(client)  # a session and its token do not make it same-site
    refused = client.post("/upload", data=form(token), headers=headers)
    assert refused.status_code == 403 and "Cross-site" in refused.get_data(as_text=True)
    api = post_images(client, (png_bytes(), "a.png"), headers=headers)
    assert api.status_code == 403
    assert rows(app) == []


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://localhost"}, {"Referer": "http://localhost/"}, {}],
)
def test_same_site_and_header_less_writes_pass(client, headers):
    token = csrf_token(client)
    assert client.post("/upload", data=form(token), headers=headers).status_code == 303


def test_the_configured_origin_is_accepted_behind_a_proxy(make_app):
    """The browser's Origin is the public one; the app sees its internal Host."""
    client = make_app(base_url="https://gallery.example").test_client()
    response = post_images(
        client, (png_bytes(), "a.png"), headers={"Origin": "https://gallery.example"}
    )
    assert response.status_code == 201


def test_absolute_urls_come_from_base_url_never_from_host(make_app):
    client = make_app(base_url="https://gallery.example").test_client()
    forged = {"Host": "evil.example"}
    image = post_images(client, (png_bytes(), "a.png"), headers=forged).get_json()["images"][0]
    for name in ("page_url", "png_url", "latent_url"):
        assert image[name].startswith("https://gallery.example/i/"), image[name]
    html = client.get(f"/i/{image['id']}", headers=forged).get_data(as_text=True)
    assert meta(html)["og:url"] == f"https://gallery.example/i/{image['id']}"
    assert "evil.example" not in html
    listed = client.get("/api/images?limit=1", headers=forged).get_json()
    assert listed["next_url"] is None or listed["next_url"].startswith("https://gallery.example/")


@pytest.mark.parametrize(("base", "secure"), [("https://gallery.example", True),
                                               ("http://localhost", False)])  # fmt: skip
def test_the_session_cookie_is_secure_behind_https(make_app, base, secure):
    client = make_app(base_url=base).test_client()
    cookie = client.get("/").headers["Set-Cookie"]
    assert ("; Secure" in cookie) == secure and "HttpOnly" in cookie


def test_responses_that_show_a_delete_key_are_not_stored(client):
    response = post_images(client, (png_bytes(), "a.png"))
    assert response.get_json()["images"][0]["delete_key"]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("suffix", ["%0A", "%0D%0A", "/"])
def test_ids_are_matched_whole(client, suffix):
    image = upload(client)
    assert not is_valid_id(image["id"] + "\n")
    assert client.get(f"/api/images/{image['id']}{suffix}").status_code == 404
