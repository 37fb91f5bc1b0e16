"""The image page's viewer over HTTP: neighbours in gallery order, the Newer/Older links, and
the picture's display renders (src, srcset, sizes) and full-size render (tiny random models)."""

from __future__ import annotations

import io
import re

from PIL import Image

from tests.conftest import png_bytes, upload
from tests.test_pages import parse
from webapp.gallery import get_gallery


def neighbours(app, image_id: str) -> tuple[str | None, str | None]:
    with app.app_context():
        return get_gallery().store.neighbours(image_id)


def picture(client, image_id: str) -> dict[str, str]:
    """The attributes of an image page's `#picture`."""
    html = client.get(f"/i/{image_id}").get_data(as_text=True)
    (attrs,) = [a for t, a in parse(html).tags if t == "img" and a.get("id") == "picture"]
    return attrs


def links(client, image_id: str) -> dict[str, tuple[str, str]]:
    """`rel` -> (href, text) of an image page's prev/next links."""
    html = client.get(f"/i/{image_id}").get_data(as_text=True)
    found = re.findall(r'<a class="button" rel="(prev|next)" href="([^"]+)">([^<]+)</a>', html)
    return {rel: (href, text) for rel, href, text in found}


def srcset(attrs: dict[str, str]) -> list[tuple[str, int]]:
    """The (url, width) candidates of an `srcset`."""
    pairs = (candidate.split() for candidate in attrs["srcset"].split(","))
    return [(url, int(descriptor.removesuffix("w"))) for url, descriptor in pairs]


def render_size(client, url: str) -> tuple[int, int]:
    """The size of the AVIF a render URL answers (checked to be one)."""
    response = client.get(url)
    assert response.status_code == 200, (url, response.get_data(as_text=True)[:300])
    assert response.mimetype == "image/avif"
    with Image.open(io.BytesIO(response.data), formats=["AVIF"]) as image:
        return image.size


def upload_three(client) -> list[str]:
    """Three uploads' ids, oldest first (the gallery lists them the other way round)."""
    return [upload(client, png_bytes(seed=seed))["id"] for seed in range(3)]


def delete(client, image: dict) -> None:
    response = client.delete(
        f"/api/images/{image['id']}", headers={"X-Delete-Key": image["delete_key"]}
    )
    assert response.status_code == 204


def test_neighbours_follow_the_gallery_order(app, client):
    oldest, middle, newest = upload_three(client)
    assert neighbours(app, newest) == (None, middle)
    assert neighbours(app, middle) == (newest, oldest)
    assert neighbours(app, oldest) == (middle, None)
    assert neighbours(app, "A" * 22) == (None, None)  # no such image
    assert neighbours(app, "not an id") == (None, None)


def test_neighbours_skip_a_deleted_image(app, client):
    oldest = upload(client, png_bytes(seed=0))
    middle = upload(client, png_bytes(seed=1))
    newest = upload(client, png_bytes(seed=2))
    delete(client, middle)
    assert neighbours(app, oldest["id"]) == (newest["id"], None)
    assert neighbours(app, newest["id"]) == (None, oldest["id"])
    delete(client, oldest)
    assert neighbours(app, newest["id"]) == (None, None)


def test_image_pages_link_the_newer_and_older_image(client):
    oldest, middle, newest = upload_three(client)
    assert links(client, middle) == {
        "prev": (f"/i/{newest}", "← Newer"),
        "next": (f"/i/{oldest}", "Older →"),
    }
    assert links(client, newest) == {"next": (f"/i/{middle}", "Older →")}
    assert links(client, oldest) == {"prev": (f"/i/{middle}", "← Newer")}


def test_a_lone_image_has_no_neighbour_links(client):
    image = upload(client)
    html = client.get(f"/i/{image['id']}").get_data(as_text=True)
    assert 'rel="prev"' not in html and 'rel="next"' not in html
    assert 'class="neighbours"' not in html


def test_a_large_picture_shows_its_display_render_and_loads_full_size_on_zoom(client):
    image = upload(client, png_bytes(1600, 1200), "large.png")
    attrs = picture(client, image["id"])
    full = f"/i/{image['id']}.avif?v="
    assert attrs["data-full"].startswith(full) and "w=" not in attrs["data-full"]
    assert attrs["src"].startswith(f"/i/{image['id']}.avif?w=1024&v=")
    candidates = srcset(attrs)
    assert [width for _, width in candidates] == [512, 1024]
    assert candidates[-1][0] == attrs["src"]
    assert not any(url.startswith(full) for url, _ in candidates)  # full size: only on zoom
    for url, width in candidates:
        assert render_size(client, url) == (width, width * 3 // 4)
    assert render_size(client, attrs["data-full"]) == (1600, 1200)
    assert "min(1600px, " in attrs["sizes"] and "(100vh - 10rem) * 1.3333" in attrs["sizes"]
    assert (attrs["width"], attrs["height"]) == ("1600", "1200")
    assert "data-retry" in attrs


def test_a_picture_within_the_display_size_shows_its_full_size(client):
    small = upload(client, png_bytes(64, 48), "small.png")
    medium = upload(client, png_bytes(768, 512), "medium.png")
    attrs = picture(client, small["id"])
    assert attrs["src"] == attrs["data-full"]
    assert attrs["src"].startswith(f"/i/{small['id']}.avif?v=")
    assert srcset(attrs) == [(attrs["src"], 64)]
    assert render_size(client, attrs["src"]) == (64, 48)

    attrs = picture(client, medium["id"])
    assert attrs["src"] == attrs["data-full"]
    assert [width for _, width in srcset(attrs)] == [512, 768]
    assert srcset(attrs)[-1][0] == attrs["src"]
    assert "min(768px, " in attrs["sizes"] and "* 1.5000)" in attrs["sizes"]


def test_shares_show_the_display_png_and_downloads_stay_the_full_size(client):
    image = upload(client, png_bytes(1600, 1200), "large.png")
    html = client.get(f"/i/{image['id']}").get_data(as_text=True)
    tags = {a.get("property") or a.get("name"): a.get("content") for t, a in parse(html).tags}
    assert tags["og:image"] == tags["twitter:image"]
    assert tags["og:image"].startswith(f"http://localhost/i/{image['id']}.png?w=1024&v=")
    assert (tags["og:image:width"], tags["og:image:height"]) == ("1024", "768")
    share = client.get(tags["og:image"].removeprefix("http://localhost"))
    assert share.mimetype == "image/png"
    assert Image.open(io.BytesIO(share.data), formats=["PNG"]).size == (1024, 768)
    assert f'href="{image["png_url"]}" download' in html
    assert "preview" in [a.get("class") for t, a in parse(html).tags if t == "img"]
