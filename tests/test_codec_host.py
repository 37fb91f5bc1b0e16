"""CodecHost: the codec's models loaded on first use, a failed load retried with growing backoff."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codec import Codec, CodecSettings, load_codec
from tests.conftest import png_bytes, post_images, wait_until
from webapp.codec_host import CodecHost
from webapp.unavailable import ModelUnavailableError


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def codec_on(folder: Path) -> Codec:
    """A codec whose encoder and decoder are the weights in `folder` (which may be empty)."""
    folder.mkdir(exist_ok=True)
    spec = str(folder)
    return load_codec(CodecSettings(encoder=spec, decoder=spec, device="cpu", effort="0"))


def test_a_failed_load_is_retried_after_a_doubling_backoff(tmp_path, tiny_folder):
    clock, weights = Clock(), tmp_path / "weights"
    host = CodecHost(codec_on(weights), retry_first=1, retry_max=60, clock=clock)
    with pytest.raises(ModelUnavailableError, match="not loaded") as refused:
        host.require()
    assert str(weights) not in str(refused.value)  # clients are told no path
    assert str(weights) in host.error  # the log is
    assert host.retry_at == 1 and not host.loaded and host.attempts == 1
    clock.now = 0.9
    with pytest.raises(ModelUnavailableError):
        host.require()
    assert host.attempts == 1  # within the backoff: the kept error, no new load
    clock.now = 1.0
    with pytest.raises(ModelUnavailableError):
        host.require()
    assert host.attempts == 2 and host.retry_at == 3.0  # then 2 s
    shutil.copytree(tiny_folder, weights, dirs_exist_ok=True)
    clock.now = 3.0
    codec = host.require()
    assert host.loaded and host.error is None and codec.decoder is not None
    assert host.require() is codec and host.attempts == 3


def test_the_backoff_stops_growing_at_its_maximum(tmp_path):
    clock = Clock()
    host = CodecHost(codec_on(tmp_path / "empty"), retry_first=1, retry_max=4, clock=clock)
    waits = []
    for _ in range(5):
        with pytest.raises(ModelUnavailableError):
            host.require()
        waits.append(host.retry_at - clock.now)
        clock.now = host.retry_at
    assert waits == [1, 2, 4, 4, 4] and host.attempts == 5


def test_when_loaded_runs_once_after_the_load_that_succeeds(tmp_path, tiny_folder):
    clock, weights = Clock(), tmp_path / "weights"
    host = CodecHost(codec_on(weights), clock=clock)
    seen = []
    host.when_loaded(seen.append)
    with pytest.raises(ModelUnavailableError):
        host.require()
    assert seen == []
    shutil.copytree(tiny_folder, weights, dirs_exist_ok=True)
    clock.now = host.retry_at
    host.require()
    host.require()
    assert seen == [host.codec]
    host.when_loaded(seen.append)  # already loaded: at once
    assert seen == [host.codec, host.codec]


def test_healthz_recovers_without_a_restart_once_the_weights_appear(
    make_app, tmp_path, monkeypatch, tiny_folder
):
    weights = tmp_path / "weights"  # mounted, but its files not there yet
    weights.mkdir()
    monkeypatch.setenv("LATENT_GALLERY_ENCODER", str(weights))
    monkeypatch.setenv("LATENT_GALLERY_DECODER", str(weights))
    monkeypatch.setenv("LATENT_GALLERY_DEVICE", "cpu")
    client = make_app(codec=None).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503 and str(weights) not in response.get_data(as_text=True)
    shutil.copytree(tiny_folder, weights, dirs_exist_ok=True)
    wait_until(lambda: client.get("/healthz").status_code == 200, timeout=20)
    assert post_images(client, (png_bytes(), "a.png")).status_code in (201, 202)
