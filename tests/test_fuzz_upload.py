"""Upload fuzzing through the Flask test client: every request gets a clear 4xx or a correct
image, never a 5xx, and the data folder and the database stay consistent after each one."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms
from werkzeug.datastructures import MultiDict

from tests.conftest import assert_consistent, encode, noise, png_bytes, post_images, snapshot
from webapp.gallery import get_gallery

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def check_response(app: Flask, client: FlaskClient, response, expected_sizes=None) -> None:
    """A 201 whose images are stored and render at their stated size, or a 4xx JSON error;
    either way the data folder and the database agree."""
    assert response.status_code < 500, response.get_data(as_text=True)
    body = response.get_json()
    if response.status_code == 201:
        images = body["images"]
        if expected_sizes is not None:
            assert [(i["width"], i["height"]) for i in images] == expected_sizes
        for image in images:
            png = client.get(f"/i/{image['id']}.png")
            assert png.status_code == 200
            assert Image.open(io.BytesIO(png.data)).size == (image["width"], image["height"])
    else:
        assert 400 <= response.status_code < 500 and body["error"]["message"]
    assert_consistent(get_gallery(app).settings.data)


def frames(fmt: str, **options) -> bytes:
    """An animation of 3 frames of different colours."""
    images = [Image.new("RGB", (40, 24), colour) for colour in ("red", "green", "blue")]
    return encode(images[0], fmt, save_all=True, append_images=images[1:], **options)


def png_claiming(width: int, height: int) -> bytes:
    """A 16x16 PNG whose IHDR (CRC fixed) claims another size: the pixel data is too short."""
    data = bytearray(png_bytes(16, 16))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    return bytes(data)


def grey16() -> Image.Image:
    """A 16-bit greyscale gradient using the full 0..65535 range."""
    return Image.fromarray(np.linspace(0, 65535, 48 * 32).reshape(32, 48).astype(np.uint16))


ACCEPTED: dict[str, tuple[Callable[[], bytes], tuple[int, int]]] = {
    "1x1 PNG": (lambda: png_bytes(1, 1), (1, 1)),
    "1x8000 PNG": (lambda: png_bytes(1, 8000), (1, 2048)),  # scaled down to MAX_SIDE
    "8000x1 PNG": (lambda: png_bytes(8000, 1), (2048, 1)),
    "animated GIF": (lambda: frames("GIF", duration=50, loop=0), (40, 24)),
    "animated PNG": (lambda: frames("PNG", duration=50), (40, 24)),
    "animated WebP": (lambda: frames("WEBP", duration=50), (40, 24)),
    "JPEG with an sRGB ICC profile": (
        lambda: encode(noise(40, 30), "JPEG", icc_profile=SRGB_ICC),
        (40, 30),
    ),
    "PNG with a garbage ICC profile": (
        lambda: encode(noise(40, 30), "PNG", icc_profile=b"not a profile" * 9),
        (40, 30),
    ),
    "16-bit grey PNG": (lambda: encode(grey16(), "PNG"), (48, 32)),
    "16-bit grey TIFF": (lambda: encode(grey16(), "TIFF"), (48, 32)),
    "CMYK JPEG": (lambda: encode(noise(40, 30).convert("CMYK"), "JPEG"), (40, 30)),
    "CMYK TIFF": (lambda: encode(noise(40, 30).convert("CMYK"), "TIFF"), (40, 30)),
    "palette PNG with transparency": (
        lambda: encode(noise(33, 17).convert("P"), "PNG", transparency=0),
        (33, 17),
    ),
    "grey + alpha PNG": (lambda: encode(noise(20, 20).convert("LA"), "PNG"), (20, 20)),
    "BMP": (lambda: encode(noise(21, 13), "BMP"), (21, 13)),
}
REFUSED: dict[str, Callable[[], bytes]] = {
    "PNG claiming 4000x4000": lambda: png_claiming(4000, 4000),
    "PNG claiming 0x0": lambda: png_claiming(0, 0),
    "GIF claiming a 65535x65535 screen": lambda: (
        frames("GIF")[:6] + struct.pack("<HH", 65535, 65535) + frames("GIF")[10:]
    ),
    "text named .png": lambda: b"hello, world\n" * 50,
    "HTML named .jpg": lambda: b"<!doctype html><script>alert(1)</script>",
    "PDF named .png": lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n%%EOF\n",
    "ZIP named .webp": lambda: b"PK\x03\x04" + bytes(100),
    "ELF named .gif": lambda: b"\x7fELF\x02\x01\x01" + bytes(200),
    "PNG signature only": lambda: b"\x89PNG\r\n\x1a\n",
    "JPEG markers only": lambda: b"\xff\xd8\xff\xd9",
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_odd_but_valid_images_are_stored_correctly(app, client, name):
    make, size = ACCEPTED[name]
    response = post_images(client, (make(), "odd.png"))
    assert response.status_code == 201, response.get_data(as_text=True)
    check_response(app, client, response, [size])


@pytest.mark.parametrize("name", REFUSED)
def test_non_images_and_liars_are_400_and_change_nothing(app, client, name):
    before = snapshot(app)
    response = post_images(client, (REFUSED[name](), "photo.png"))
    assert response.status_code == 400, response.get_data(as_text=True)
    check_response(app, client, response)
    assert snapshot(app) == before


SAMPLES = {fmt: encode(noise(64, 48, seed=3), fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP")}


@FUZZ
@given(fmt=st.sampled_from(sorted(SAMPLES)), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_images_are_400_or_the_whole_image(app, client, fmt, cut):
    data = SAMPLES[fmt]
    response = post_images(client, (data[: int(len(data) * cut)], f"cut.{fmt.lower()}"))
    check_response(app, client, response, [(64, 48)])


FIELD_NAMES = st.sampled_from(["file", "file", "files", "image", "", "file[]", "FILE"])
FILENAMES = st.one_of(
    st.sampled_from(["a.png", "../../etc/passwd", "", "x" * 300, "spa ce.jpg", "ü.gif", "a\x00b"]),
    st.text(max_size=40),
)
CONTENT = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(list(SAMPLES.values())),
    st.sampled_from(list(SAMPLES.values())).flatmap(
        lambda data: st.integers(0, len(data) - 1).map(lambda n: data[:n])
    ),
)


@FUZZ
@given(
    parts=st.lists(st.tuples(FIELD_NAMES, FILENAMES, CONTENT), max_size=5),
    fields=st.lists(st.tuples(st.sampled_from(["file", "csrf_token", "x"]), st.text(max_size=20))),
)
def test_random_multipart_forms(app, client, parts, fields):
    files = [(field, (io.BytesIO(content), name)) for field, name, content in parts]
    response = client.post("/api/images", data=MultiDict([*fields, *files]))
    check_response(app, client, response)


@FUZZ
@given(
    body=st.binary(max_size=400),
    boundary=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    content_type=st.sampled_from(
        ["multipart/form-data; boundary={}", "multipart/form-data", "application/json",
         "text/plain", "multipart/mixed; boundary={}", "image/png", ""]
    ),
)  # fmt: skip
def test_random_request_bodies(app, client, body, boundary, content_type):
    headers = {"Content-Type": content_type.format(boundary)} if content_type else {}
    check_response(app, client, client.post("/api/images", data=body, headers=headers))


def test_many_files_at_once_store_the_good_ones_and_report_the_bad_ones(app, client):
    files = [
        (png_bytes(24, 16, seed=i), f"{i}.png") if i % 3 else (b"junk", f"{i}.png")
        for i in range(8)
    ]  # as many as LATENT_GALLERY_MAX_FILES takes
    response = post_images(client, *files)
    assert response.status_code == 201
    body = response.get_json()
    assert len(body["images"]) == 5 and len(body["errors"]) == 3
    assert {e["filename"] for e in body["errors"]} == {f"{i}.png" for i in range(0, 8, 3)}
    check_response(app, client, response, [(24, 16)] * 5)


def test_more_form_parts_than_allowed_is_413_and_changes_nothing(app, client):
    before = snapshot(app)
    response = post_images(client, *[(b"x", "a.png")] * 1001)
    assert response.status_code == 413
    check_response(app, client, response)
    assert snapshot(app) == before
