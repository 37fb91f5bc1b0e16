"""Faults on a real gunicorn with the real TAESD weights: kill -9 during uploads, a full disk,
missing or corrupt decoder weights. Nothing acknowledged is lost, nothing hangs."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import assert_consistent, encode, png_bytes, post_images
from tests.servers import Gunicorn, local_path
from tests.shared import kodak_path, taesd_path
from webapp.gallery import get_gallery
from webapp.upload_flow import NOT_STORED

UPLOADERS = 4
SIDE = 256  # Kodak crops: a real photo, a quick encode on a CPU


def kodak_crops() -> list[bytes]:
    """PNG crops of the Kodak photos, `SIDE` pixels square, four per photo."""
    crops = []
    for path in sorted(kodak_path().glob("*.png"))[:6]:
        with Image.open(path) as photo:
            for x, y in ((0, 0), (SIDE, 0), (0, SIDE), (SIDE, SIDE)):
                crops.append(encode(photo.convert("RGB").crop((x, y, x + SIDE, y + SIDE)), "PNG"))
    return crops


def weights_env(weights: Path | str | None = None, decoder: Path | str | None = None) -> dict:
    """Settings of a server on the real TAESD (or `decoder`), without an upload rate limit,
    whose uploads wait up to 60 s for their encodes."""
    weights = str(weights or taesd_path())
    return {
        "LATENT_GALLERY_ENCODER": weights,
        "LATENT_GALLERY_DECODER": str(decoder or weights),
        "LATENT_GALLERY_UPLOAD_RATE": "100000/minute",
        "LATENT_GALLERY_UPLOAD_WAIT": "60",  # 201s (or 507s), not 202s, even on a slow CPU
    }


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Gunicorn]]:
    """Servers a test starts (append them); all stopped afterwards."""
    started: list[Gunicorn] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[Gunicorn], data: Path, env: dict, healthy: bool = True) -> Gunicorn:
    """Start a gunicorn on `data`, its log beside the data folder."""
    log = data.parent / f"gunicorn-{len(servers)}.log"
    servers.append(Gunicorn(data, log, env))
    return servers[-1].start(healthy=healthy)


def assert_renders(server: Gunicorn, image_id: str, size: tuple[int, int]) -> None:
    """The image's PNG decodes at `size`."""
    status, headers, png = server.request("GET", f"/i/{image_id}.png")
    assert status == 200 and headers["Content-Type"] == "image/png", (status, png[:200])
    assert Image.open(io.BytesIO(png)).size == size


def test_kill_9_during_an_upload_burst_loses_nothing_acknowledged(tmp_path, servers):
    """201s are all kept; a 202's status URL, after the restart, says stored (and the image is
    there) or not stored (send again), never anything else; no upload is refused."""
    data, crops = tmp_path / "data", kodak_crops()
    acknowledged: list[str] = []
    accepted: list[str] = []  # status URLs of 202s
    answers: list[int] = []
    for round_ in range(2):
        server = start(servers, data, weights_env())
        stop, done = threading.Event(), threading.Semaphore(0)

        def uploader(
            offset: int, server: Gunicorn = server, stop: threading.Event = stop, done=done
        ) -> None:
            for n in range(offset, 10_000, UPLOADERS):
                if stop.is_set():
                    return
                try:
                    status, body = server.upload(crops[n % len(crops)], f"{n}.png", timeout=120)
                except (OSError, json.JSONDecodeError):
                    return  # the server died under this request: not acknowledged
                answers.append(status)
                if status == 201:
                    acknowledged.extend(image["id"] for image in body["images"])
                elif status == 202:
                    accepted.extend(job["status_url"] for job in body["jobs"])
                done.release()

        threads = [threading.Thread(target=uploader, args=(i,)) for i in range(UPLOADERS)]
        for thread in threads:
            thread.start()
        for _ in range(3 + 3 * round_):
            assert done.acquire(timeout=300), server.logs()
        server.kill()  # with UPLOADERS uploads in flight: encoding, writing or committing
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    server = start(servers, data, weights_env())
    repair = subprocess.run(
        [sys.executable, "-m", "webapp.cli", "repair", "--grace", "0"],
        env={**os.environ, "LATENT_GALLERY_DATA": str(data)},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "orphan rows: 0" in repair.stdout  # a row is committed only after its file
    listed = server.listed_ids()
    assert set(answers) <= {201, 202}, answers
    assert len(acknowledged) >= 3 and len(answers) >= 9 and set(acknowledged) <= set(listed)
    for url in accepted:
        status, _, body = server.request("GET", local_path(url))
        if status == 200:
            assert json.loads(body)["image"]["id"] in listed
        else:
            assert status == 404 and json.loads(body)["error"]["message"] == NOT_STORED, body
    assert assert_consistent(data) == set(listed)
    for image_id in listed:
        assert_renders(server, image_id, (SIDE, SIDE))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs; skips where mounting is not permitted (not root, no CAP_SYS_ADMIN)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"cannot mount a size-limited tmpfs: {exc}")
    if result.returncode:
        pytest.skip(f"cannot mount a size-limited tmpfs: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def fill(folder: Path) -> Path:
    """Write a file until the disk has not one byte left; returns it."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (2**16, 2**12, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def test_full_disk_is_507_writes_nothing_and_keeps_earlier_images(small_disk, servers):
    data, crops = small_disk / "data", kodak_crops()
    server = start(servers, data, weights_env())
    status, body = server.upload(crops[0], "before.png")
    assert status == 201, body
    kept = body["images"][0]["id"]
    latent = (data / "latents" / f"{kept}.sdz").read_bytes()

    filler = fill(small_disk)
    for crop in crops[1:4]:
        status, body = server.upload(crop, "full.png")
        assert status == 507, body
        assert "disk is full" in body["error"]["message"]
        assert assert_consistent(data) == {kept}
    assert "disk full" in server.logs()
    assert server.listed_ids() == [kept]
    assert (data / "latents" / f"{kept}.sdz").read_bytes() == latent
    assert_renders(server, kept, (SIDE, SIDE))

    filler.unlink()  # space again: uploads work without a restart
    status, body = server.upload(crops[5], "after.png")
    assert status == 201, body
    assert assert_consistent(data) == {kept, body["images"][0]["id"]}


def test_disk_filling_up_mid_request_reports_each_file(app, client, monkeypatch):
    """The first file is stored and acknowledged, the second answered 507, in one 201."""
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 2:  # the first file's data and folder fsyncs succeed
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    response = post_images(client, (png_bytes(seed=1), "one.png"), (png_bytes(seed=2), "two.png"))
    monkeypatch.undo()
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    [stored] = body["images"]
    assert body["errors"] == [
        {"filename": "two.png", "status": 507, "message": body["errors"][0]["message"]}
    ]
    assert "disk is full" in body["errors"][0]["message"]
    assert assert_consistent(get_gallery(app).settings.data) == {stored["id"]}


@pytest.fixture(scope="module")
def stored_gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data folder with one image, written by a healthy server; and the image's id."""
    data = tmp_path_factory.mktemp("gallery") / "data"
    server = Gunicorn(data, data.parent / "gunicorn.log", weights_env()).start()
    try:
        status, body = server.upload(kodak_crops()[0], "a.png")
        assert status == 201, body
    finally:
        server.stop()
    return data, body["images"][0]["id"]


def corrupt_weights(folder: Path) -> Path:
    """A copy of the TAESD folder with its decoder file cut in half."""
    shutil.copytree(taesd_path(), folder)
    for path in folder.glob("*decoder*"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return folder


@pytest.mark.parametrize("broken", ["empty", "corrupt"])
def test_broken_decoder_is_503_with_the_cause_in_the_log_and_nothing_hangs(
    tmp_path, servers, stored_gallery, broken
):
    data = tmp_path / "data"
    shutil.copytree(stored_gallery[0], data)
    image_id = stored_gallery[1]
    decoder = tmp_path / "w"  # mounted, without the weights' files yet, or with one cut short
    decoder.mkdir() if broken == "empty" else corrupt_weights(decoder)
    server = start(servers, data, weights_env(decoder=decoder), healthy=False)

    status, _, body = server.request("GET", "/healthz")
    assert status == 503 and json.loads(body)["status"] == "unavailable"
    assert str(decoder).encode() not in body and b"weights" not in body  # no paths told
    logs = server.logs()
    assert "cannot load the models" in logs and str(decoder) in logs
    assert "LATENT_GALLERY_DECODER" in logs
    for path in (f"/i/{image_id}.png", f"/i/{image_id}.png?w=256"):
        start_s = time.monotonic()
        status, headers, body = server.request("GET", path, timeout=10)
        assert status == 503 and int(headers["Retry-After"]) > 0, body[:300]
        assert time.monotonic() - start_s < 5
    status, body = server.upload(kodak_crops()[1], "b.png", timeout=10)
    assert status == 503 and "models are not loaded" in body["error"]["message"]
    # What needs no model still works: the gallery, the metadata, the latent file.
    assert server.request("GET", "/", timeout=10)[0] == 200
    assert server.listed_ids() == [image_id]
    assert server.request("GET", f"/i/{image_id}.sdz", timeout=10)[0] == 200
    assert assert_consistent(data) == {image_id}
