"""Fixtures for the web app: `app` and `client` (flaskr style) on a tiny random codec."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from codec import Codec, CodecSettings
from tests.servers import MotoS3, Postgres, unavailable
from tests.tiny_models import tiny_taesd, tiny_taesd_module
from webapp import create_app
from webapp.gallery import get_gallery
from webapp.metadata import MetadataStore
from webapp.settings import Settings
from webapp.storage import ImageStore, blob_names_of

UNLIMITED_UPLOADS = (10_000, 1.0)
TEST_UPLOAD_WAIT = 120.0
"""Seconds an upload request waits for its encodes in tests (`make_app`): uploads answer 201
even on a loaded CPU; the 202 path is tested with its own, shorter wait."""


@pytest.fixture(scope="session")
def tiny_codec() -> Codec:
    """The codec's default method on a tiny random TAESD: fast, no downloads, no ../shared.

    Effort 0, not `auto`: what `auto` means is measured on the machine and its load, so a test
    of the web app would otherwise refine (and skip a decode) on some runs only."""
    model = tiny_taesd()
    return Codec(CodecSettings(effort="0"), encoder=model, decoder=model)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny random TAESD saved as a diffusers folder (a model spec for the variables)."""
    folder = tmp_path_factory.mktemp("tiny-taesd")
    tiny_taesd_module().save_pretrained(folder)
    return folder


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tiny_folder: Path) -> None:
    """`LATENT_GALLERY_ENCODER`/`DECODER` set to the tiny TAESD folder, on the CPU."""
    monkeypatch.setenv("LATENT_GALLERY_ENCODER", str(tiny_folder))
    monkeypatch.setenv("LATENT_GALLERY_DECODER", str(tiny_folder))
    monkeypatch.setenv("LATENT_GALLERY_DEVICE", "cpu")


@pytest.fixture
def decoded_widths(tiny_codec: Codec, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The widths (in pixels) of the latents the tiny codec's decoder is given, in order: which
    image, or which of an image's latents, each decode was."""
    widths: list[int] = []
    decode = tiny_codec.decode_latents

    def recording(latents: torch.Tensor, scale: tuple[float, float] | None = None) -> torch.Tensor:
        widths.extend([latents.shape[-1] * 8] * len(latents))
        return decode(latents, scale)

    monkeypatch.setattr(tiny_codec, "decode_latents", recording)
    return widths


@pytest.fixture
def make_app(tmp_path: Path, tiny_codec: Codec) -> Iterator[Callable[..., Flask]]:
    """Build apps over `tmp_path/data` on the tiny codec (`codec=None`: the one the environment
    names); keyword arguments override `Settings` fields. All closed after."""
    apps: list[Flask] = []

    def make(codec: Codec | None = tiny_codec, **overrides: Any) -> Flask:
        defaults = {
            "data": tmp_path / "data",
            "upload_rate": UNLIMITED_UPLOADS,
            "upload_wait": TEST_UPLOAD_WAIT,
            "base_url": "http://localhost",  # the test client's origin
        }
        settings = dataclasses.replace(Settings.from_env(), **(defaults | overrides))
        apps.append(create_app(settings, codec=codec))
        apps[-1].testing = True
        return apps[-1]

    yield make
    for app in apps:
        get_gallery(app).close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """The app on the tiny codec, with its data folder in `tmp_path/data`."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of `app`."""
    return app.test_client()


@dataclass(frozen=True)
class Backend:
    """Where a store keeps its rows and files: `LATENT_GALLERY_DATABASE_URL` and
    `_STORAGE_URL` ("": the data folder's SQLite file and folder) and the AWS variables."""

    name: str
    database: str = ""
    storage: str = ""
    aws: Mapping[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The variables of a server (e.g. `tests.servers.Gunicorn`) on this backend."""
        urls = {"DATABASE_URL": self.database, "STORAGE_URL": self.storage}
        return {**{f"LATENT_GALLERY_{k}": v for k, v in urls.items() if v}, **self.aws}

    def config(self) -> dict[str, str]:
        """The `Settings` fields (`make_app(**backend.config())`) of this backend."""
        return {"database_url": self.database, "storage_url": self.storage}

    def open(self, data: Path) -> ImageStore:
        """A store on this backend (`data`: the data folder its defaults live in)."""
        return ImageStore.open(data, self.database, self.storage)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL 15 server for the session (skipped if not installed, unless required)."""
    reason = Postgres.missing()
    if reason:
        unavailable(reason)
    server = Postgres().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One moto S3 server for the session."""
    if importlib.util.find_spec("moto") is None:
        unavailable("moto is not installed (pip install 'moto[server]')")
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def shared_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """A fresh PostgreSQL database (migrated, as `latent-gallery db upgrade` leaves it) and S3
    bucket; the AWS variables set for this test."""
    postgres, s3 = request.getfixturevalue("postgres"), request.getfixturevalue("moto_s3")
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    name = f"t{secrets.token_hex(8)}"
    database = MetadataStore(postgres.create_database(name))
    database.upgrade()
    database.close()
    return Backend(
        "s3+postgresql", postgres.url(name), f"s3://{s3.create_bucket(name)}/latents", s3.env
    )


@pytest.fixture(params=["folder+sqlite", "s3+postgresql"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn: the single-node default, then S3 + PostgreSQL."""
    if request.param == "folder+sqlite":
        return Backend(request.param)
    return request.getfixturevalue("shared_backend")


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A PNG of random pixels."""
    return encode(noise(width, height, seed), "PNG")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """An image saved to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def post_images(client: FlaskClient, *files: tuple[bytes, str], **kwargs: Any):
    """POST /api/images with each (bytes, filename) as a `file` field."""
    data = {"file": [(io.BytesIO(content), name) for content, name in files]}
    return client.post("/api/images", data=data, **kwargs)


def upload(client: FlaskClient, content: bytes | None = None, name: str = "a.png") -> dict:
    """Upload one image through the API; its JSON (with the delete key)."""
    response = post_images(client, (content or png_bytes(), name))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["images"][0]


def data_files(app: Flask) -> list[str]:
    """Every file under the app's data folder, relative, sorted."""
    root = get_gallery(app).settings.data
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def snapshot(app: Flask) -> tuple[list[str], list[tuple]]:
    """The data folder's files and the database rows: to check that nothing changed."""
    return data_files(app), rows(app)


def assert_consistent(data: Path, database: str = "", storage: str = "") -> set[str]:
    """Assert that a store (by default the data folder's SQLite file and latents folder) is
    consistent: every row has its latent files (a display latent where it records one), every
    file its row, no temp file is left (the store marker aside); returns the ids stored."""
    store = ImageStore.open(data, database, storage)
    try:
        records = [record for record, _ in store.metadata.rows()]
        files = {name for name, _ in store.blob_names()}
    finally:
        store.metadata.close()
    expected = {name for record in records for name in blob_names_of(record)}
    assert files == expected, (sorted(files), sorted(expected))
    return {record.id for record in records}


def rows(app: Flask) -> list[tuple]:
    """All rows of the images table."""
    engine = get_gallery(app).store.metadata.engine
    with engine.connect() as connection:
        return [
            tuple(row) for row in connection.exec_driver_sql("SELECT * FROM images ORDER BY seq")
        ]


def metric(client: FlaskClient, name: str, labels: str = "") -> float:
    """A sample's value from /metrics: `metric(c, "latent_gallery_decodes_total")`. Fails the
    test if no metric family has that sample name (a renamed or missing metric); 0 for `labels`
    not seen yet (a labelled counter has no sample before its first increment)."""
    text = client.get("/metrics").get_data(as_text=True)
    families = re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)
    if not any(name == family or name.startswith(f"{family}_") for family in families):
        pytest.fail(f"/metrics has no metric {name!r}; it has {families}")
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    if match is None and not labels:
        pytest.fail(f"/metrics has no sample {name!r}:\n{text}")
    return float(match[1]) if match else 0.0


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until `condition()` holds; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(0.01)


def wait_idle(app: Flask) -> None:
    """Wait until the app's render service has nothing queued or in flight (e.g. warming)."""
    wait_until(get_gallery(app).renderer.idle)


@contextlib.contextmanager
def decoder_held(app: Flask) -> Iterator[None]:
    """Block the decode thread inside its next forward pass (the model's own lock) until the
    block exits: a deterministic busy model, with the real codec."""
    lock = get_gallery(app).codec_host.require().render_decoder._lock
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
