"""A bad setting stops the start: gunicorn exits at once, with one line naming the variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

BAD = {
    "LATENT_GALLERY_ENCODER": "/nonexistent/taesd",
    "LATENT_GALLERY_DECODER": "./no-such-folder",
    "LATENT_GALLERY_DEVICE": "gpu",
    "LATENT_GALLERY_METHOD": "bogus",
    "LATENT_GALLERY_CORRECTION": "/nonexistent",
    "LATENT_GALLERY_DECODER_TUNING": "sometimes",
    "LATENT_GALLERY_THUMBNAIL_DECODER": "/nonexistent.safetensors",
    "LATENT_GALLERY_EFFORT": "11",
    "LATENT_GALLERY_RENDER_PRECISION": "half",
    "LATENT_GALLERY_TILE": "100",
    "LATENT_GALLERY_MAX_PIXELS": "-5",
    "LATENT_GALLERY_MAX_SIDE": "big",
    "LATENT_GALLERY_CACHE_MB": "lots",
    "LATENT_GALLERY_MAX_UPLOAD_MB": "0",
    "LATENT_GALLERY_UPLOAD_RATE": "fast",
    "LATENT_GALLERY_UPLOAD_MEGAPIXELS": "60/fortnight",
    "LATENT_GALLERY_MAX_FILES": "-1",
    "LATENT_GALLERY_QUEUE": "1.5",
    "LATENT_GALLERY_BATCH": "0",
    "LATENT_GALLERY_DECODE_TIMEOUT": "soon",
    "LATENT_GALLERY_WARM_ON_START": "maybe",
    "LATENT_GALLERY_PREVIEWS": "2",
    "LATENT_GALLERY_ENCODE_QUEUE": "none",
    "LATENT_GALLERY_UPLOAD_WAIT": "-3",
    "LATENT_GALLERY_THREADS": "0",
    "LATENT_GALLERY_LOG_LEVEL": "loud",
    "LATENT_GALLERY_DATABASE_URL": "mysql://db/gallery",
    "LATENT_GALLERY_REDIS_URL": "localhost:6379",
    "LATENT_GALLERY_TRUSTED_PROXIES": "-1",
    "LATENT_GALLERY_BASE_URL": "ftp://gallery.example/path",
}
"""A bad value of each variable of the README's Configuration table that can have one."""
FREE = {
    "LATENT_GALLERY_DATA",  # any folder; created at start
    "LATENT_GALLERY_SECRET_KEY",
    "LATENT_GALLERY_STORAGE_URL",  # a folder, or s3://...: checked when the store opens
    "LATENT_GALLERY_BIND",  # gunicorn's own
}


def test_every_variable_in_the_readme_is_covered():
    table = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"`(LATENT_GALLERY_[A-Z_]+)`", table))
    assert listed == set(BAD) | FREE


@pytest.mark.parametrize(("name", "value"), BAD.items(), ids=list(BAD))
def test_a_bad_setting_stops_gunicorn_at_once_naming_it(tmp_path: Path, tiny_folder, name, value):
    env = {
        **os.environ,
        "LATENT_GALLERY_ENCODER": str(tiny_folder),
        "LATENT_GALLERY_DECODER": str(tiny_folder),
        "LATENT_GALLERY_DATA": str(tmp_path / "data"),
        "LATENT_GALLERY_BIND": "127.0.0.1:0",
        name: value,
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"latent-gallery: {name}="), lines
    assert value in lines[0] and ": expected " in lines[0], lines
    assert not (tmp_path / "data").exists()  # stopped before anything was written
