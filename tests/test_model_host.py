"""ModelHost: the codec loaded on first use, a failed load retried with growing backoff."""

from __future__ import annotations

import shutil

import pytest

from codec import Codec
from tests.conftest import png_bytes, post_images, wait_until
from webapp.model_host import ModelHost
from webapp.unavailable import ModelUnavailableError


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_load_is_retried_after_a_doubling_backoff(tiny_codec: Codec):
    clock, calls = Clock(), []

    def factory() -> Codec:
        calls.append(clock.now)
        if len(calls) < 3:
            raise OSError("no weights at /models yet")
        return tiny_codec

    host = ModelHost(factory, retry_first=1, retry_max=60, clock=clock)
    with pytest.raises(ModelUnavailableError, match="not loaded") as refused:
        host.require()
    assert "/models" not in str(refused.value)  # clients are told no path
    assert host.error == "OSError: no weights at /models yet"
    assert host.retry_at == 1 and host.codec is None
    clock.now = 0.9
    with pytest.raises(ModelUnavailableError):
        host.require()
    assert calls == [0.0]  # within the backoff: the cached error, no new load
    clock.now = 1.0
    with pytest.raises(ModelUnavailableError):
        host.require()
    assert calls == [0.0, 1.0] and host.retry_at == 3.0  # then 2 s
    clock.now = 3.0
    assert host.require() is tiny_codec and host.error is None
    assert host.require() is tiny_codec and calls == [0.0, 1.0, 3.0]


def test_the_backoff_stops_growing_at_its_maximum():
    clock = Clock()

    def factory() -> Codec:
        raise ValueError("bad spec")

    host = ModelHost(factory, retry_first=1, retry_max=4, clock=clock)
    waits = []
    for _ in range(5):
        with pytest.raises(ModelUnavailableError):
            host.require()
        waits.append(host.retry_at - clock.now)
        clock.now = host.retry_at
    assert waits == [1, 2, 4, 4, 4] and host.attempts == 5


def test_when_loaded_runs_once_after_the_load_that_succeeds(tiny_codec: Codec):
    clock, fail = Clock(), [True]

    def factory() -> Codec:
        if fail[0]:
            raise OSError("not yet")
        return tiny_codec

    host = ModelHost(factory, clock=clock)
    seen = []
    host.when_loaded(seen.append)
    with pytest.raises(ModelUnavailableError):
        host.require()
    assert seen == []
    fail[0], clock.now = False, host.retry_at
    host.require()
    host.require()
    assert seen == [tiny_codec]
    host.when_loaded(seen.append)  # already loaded: at once
    assert seen == [tiny_codec, tiny_codec]


def test_healthz_recovers_without_a_restart_once_the_weights_appear(
    make_app, tmp_path, monkeypatch, tiny_folder
):
    weights = tmp_path / "weights"
    monkeypatch.setenv("LATENT_GALLERY_ENCODER", str(weights))
    monkeypatch.setenv("LATENT_GALLERY_DECODER", str(weights))
    monkeypatch.setenv("LATENT_GALLERY_DEVICE", "cpu")
    client = make_app(CODEC=None).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503 and str(weights) not in response.get_data(as_text=True)
    shutil.copytree(tiny_folder, weights)
    wait_until(lambda: client.get("/healthz").status_code == 200, timeout=20)
    assert post_images(client, (png_bytes(), "a.png")).status_code in (201, 202)
