"""Equal-bytes comparison: the largest quality that fits, and the command's table and exits
(needs the `bench` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ssimulacra2", reason="the bench extra is not installed")

from benchmarks import equal_bytes, standard

WEBP = standard.FORMATS["WebP"]


def _photo(size: tuple[int, int] = (160, 120), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, size[0])[None, :, None] * np.ones((size[1], 1, 3))
    pixels = np.clip(x + rng.normal(0, 25, x.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _size(image: Image.Image, quality: int) -> int:
    return len(standard.encode(image, WEBP, quality).data)


@pytest.mark.parametrize("quality", [0, 37, 80])
def test_fitted_is_the_largest_quality_within_the_budget(quality: int) -> None:
    image = _photo()
    budget = _size(image, quality) + 1
    chosen = standard.fitted(image, WEBP, budget)
    assert chosen is not None
    assert len(chosen.data) <= budget
    assert _size(image, chosen.quality + 1) > budget


def test_fitted_top_quality_when_everything_fits() -> None:
    image = _photo()
    chosen = standard.fitted(image, WEBP, _size(image, 100))
    assert chosen is not None and chosen.quality == 100


def test_fitted_none_when_even_the_lowest_quality_is_over() -> None:
    image = _photo()
    assert standard.fitted(image, WEBP, _size(image, 0) - 1) is None


def test_large_photos_are_scaled_down_with_a_note(tmp_path: Path) -> None:
    _photo((1500, 600)).save(tmp_path / "wide.png")
    _photo((300, 200)).save(tmp_path / "small.png")
    image, note = equal_bytes.load(tmp_path / "wide.png")
    assert image.size == (1024, 410) and note == "wide.png: 1500x600 scaled down to 1024x410"
    assert equal_bytes.load(tmp_path / "small.png")[1] is None


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        equal_bytes.main(list(argv))
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_bad_command_lines_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = str(tmp_path)
    for argv in (["--images", str(tmp_path / "missing.png"), "--weights", weights],
                 ["--images", str(tmp_path), "--weights", weights],
                 ["--images", str(tmp_path), "--weights", str(tmp_path / "none")],
                 ["--bogus"]):  # fmt: skip
        status, out, err = _run(capsys, *argv)
        assert (status, out, err.count("\n")) == (2, "", 1), (argv, err)


def test_unreadable_photo_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not a JPEG")
    status, out, err = _run(capsys, "--images", str(tmp_path), "--weights", str(tmp_path))
    assert (status, out) == (1, "")
    assert err.startswith("equal_bytes: ") and "broken.jpg" in err and err.count("\n") == 1


@pytest.mark.skipif(importlib.util.find_spec("pycvvdp") is None, reason="cvvdp is not installed")
def test_table_on_a_tiny_codec(
    tmp_path: Path, tiny_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _photo((1100, 96), seed=1).save(tmp_path / "wide.png")
    _photo((128, 96), seed=2).save(tmp_path / "small.png")
    status, out, err = _run(capsys, "--images", str(tmp_path), "--weights", str(tiny_folder))
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["photo", "codec", "quality", "bytes", "bpp"]
    assert lines[2].split()[:2] == ["small", "ours"]
    assert "mean of 2" in out
    for rival in standard.RIVALS:
        assert f"ours better than {rival} on PSNR" in out or f"{rival} cannot be made" in out
    assert "note: wide.png: 1100x96 scaled down to 1024x89 first (long side <= 1024 px)" in out
    assert "photos" in err  # the progress bar
