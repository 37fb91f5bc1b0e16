"""The default configuration end to end: a real gunicorn with the real TAESD weights and the
effort `auto` resolves to on the machine running the test. Photos it has never seen are stored
and render, whatever the encode takes, and an idle server never answers 503."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.conftest import encode
from tests.servers import Gunicorn, local_path
from tests.shared import taesd_path

pytestmark = pytest.mark.shared

SIZE = (768, 512)


def synthetic_photo(seed: int, size: tuple[int, int] = SIZE) -> bytes:
    """A deterministic photo-like JPEG (not a Kodak image): a lit sky-to-ground gradient,
    soft shapes in front of it, textured surfaces and sensor grain."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    sky, ground = rng.uniform(0.3, 1.0, 3), rng.uniform(0.1, 0.6, 3)
    horizon = rng.uniform(0.3, 0.7) * height / max(size)
    blend = 1 / (1 + np.exp(-(y - horizon) * 40))
    light = 0.8 + 0.2 * np.cos(2 * np.pi * (x * rng.uniform(0.5, 1.5) + rng.uniform()))
    pixels = ((1 - blend)[..., None] * sky + blend[..., None] * ground) * light[..., None]
    image = Image.fromarray(np.uint8(np.clip(pixels, 0, 1) * 255))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        box = [x0, y0, x0 + rng.integers(30, 250), y0 + rng.integers(30, 200)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(2))
    texture = rng.normal(0, 1, (height // 4, width // 4, 1))
    texture = np.kron(texture, np.ones((4, 4, 1)))  # blotches 4 pixels wide
    grain = rng.normal(0, 4, (height, width, 3))
    noisy = np.asarray(image, dtype=np.float64) + 10 * texture + grain
    return encode(Image.fromarray(np.uint8(np.clip(noisy, 0, 255))), "JPEG", quality=90)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Gunicorn]:
    """gunicorn on the real TAESD with every other setting at its default."""
    weights = str(taesd_path())
    env = {
        "LATENT_GALLERY_ENCODER": weights,
        "LATENT_GALLERY_DECODER": weights,
        "LATENT_GALLERY_EFFORT": "auto",  # the default, whatever the caller's environment says
    }
    server = Gunicorn(tmp_path / "data", tmp_path / "gunicorn.log", env)
    try:
        yield server.start()
    finally:
        server.stop()


def test_default_configuration_stores_three_unseen_photos_in_a_row_without_a_503(server):
    images = []
    for seed in range(3):
        status, body = server.upload(synthetic_photo(seed), f"photo-{seed}.jpg")
        images.append(server.stored(status, body))
        assert server.request("GET", "/healthz")[0] == 200
    assert [(i["width"], i["height"]) for i in images] == [SIZE] * 3
    assert set(server.listed_ids()) == {image["id"] for image in images}
    for image in images:
        status, headers, png = server.request("GET", local_path(image["png_url"]))
        assert status == 200 and headers["Content-Type"] == "image/png", png[:200]
        assert Image.open(io.BytesIO(png)).size == SIZE
    assert '" 503 ' not in server.logs(), server.logs()  # the access log: no 503 at all
