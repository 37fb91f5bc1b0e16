"""The `latent-gallery` command: exit codes, one-line errors, outputs on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from codec.cli import main


@pytest.fixture
def photos(tmp_path):
    paths = []
    for index, size in enumerate([(40, 24), (17, 33)]):
        path = tmp_path / f"photo{index}.png"
        Image.new("RGB", size, (index * 80, 100, 200)).save(path)
        paths.append(path)
    return paths


def test_encode_decode_info(env, photos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["encode", *map(str, photos), "-o", str(out), "--quality", "40"]) == 0
    files = sorted(out.glob("*.sdz"))
    assert [f.name for f in files] == ["photo0.sdz", "photo1.sdz"]
    png = tmp_path / "back.png"
    assert main(["decode", str(files[1]), "-o", str(png)]) == 0
    assert Image.open(png).size == (17, 33)
    capsys.readouterr()
    assert main(["info", str(files[0]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 40 and info["method"] == "ec" and info["latent_shape"] == [4, 3, 5]
    assert info["bytes"] == files[0].stat().st_size


def test_target_bytes_and_method(env, photos, tmp_path, capsys):
    target = tmp_path / "one.sdz"
    assert main(["encode", str(photos[0]), "-o", str(target), "--target-bytes", "400"]) == 0
    assert target.stat().st_size <= 400
    assert main(["encode", str(photos[0]), "-o", str(target), "-m", "palette"]) == 0
    capsys.readouterr()
    assert main(["info", str(target)]) == 0
    assert "palette" in capsys.readouterr().out


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[: len(d) // 2],
        lambda d: d[:20] + bytes([d[20] ^ 4]) + d[21:],
        lambda d: os.urandom(300),
    ],
    ids=["truncated", "bit-flip", "random"],
)
def test_bad_latent_files_exit_1_with_one_line(env, photos, tmp_path, capsys, damage):
    good = tmp_path / "good.sdz"
    assert main(["encode", str(photos[0]), "-o", str(good)]) == 0
    bad = tmp_path / "bad.sdz"
    bad.write_bytes(damage(good.read_bytes()))
    capsys.readouterr()
    assert main(["decode", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("latent-gallery: error: ") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_image_over_the_pixel_limit(env, photos, monkeypatch, capsys):
    monkeypatch.setenv("LATENT_GALLERY_MAX_PIXELS", "100")
    assert main(["encode", str(photos[0])]) == 1
    assert "over the limit of 100 pixels" in capsys.readouterr().err
    assert not photos[0].with_suffix(".sdz").exists()


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_bad_setting_exits_1_naming_its_variable(env, photos, monkeypatch, capsys, command):
    monkeypatch.setenv("LATENT_GALLERY_METHOD", "bogus")
    assert main([command, str(photos[0])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("latent-gallery: error: LATENT_GALLERY_METHOD='bogus': expected one of")
    assert not photos[0].with_suffix(".sdz").exists()


def test_real_process_exit_codes(env, tmp_path):
    command = [sys.executable, "-m", "codec.cli"]
    usage = subprocess.run([*command, "encode"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    junk = tmp_path / "junk.sdz"
    junk.write_bytes(b"SDZ\x1a" + os.urandom(100))
    failed = subprocess.run(
        [*command, "info", str(junk)], capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
