"""Benchmark quality measures (with the codec's PSNR and rate) and Bjøntegaard deltas (needs
the `bench` extra)."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pytorch_msssim", reason="the bench extra is not installed")
pytest.importorskip("scipy", reason="the bench extra is not installed")
pytest.importorskip("ssimulacra2", reason="the bench extra is not installed")

from benchmarks import bdrate, cvvdp, quality, report
from codec.measures import bits_per_pixel, psnr

needs_cvvdp = pytest.mark.skipif(
    importlib.util.find_spec("pycvvdp") is None,
    reason="cvvdp is not installed (pip install --no-deps cvvdp, see the README)",
)

RATES = [0.05, 0.08, 0.12, 0.2, 0.3]
PSNRS = [21.0, 22.5, 23.6, 24.5, 25.0]


def _noise_image(seed: int = 0, size: tuple[int, int] = (256, 192)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size[0])[None, :, None] * np.ones((size[1], 1, 3))
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _shifted(image: Image.Image, delta: int) -> Image.Image:
    pixels = np.asarray(image).astype(np.int16) + delta
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def test_psnr_identical_is_inf() -> None:
    image = _noise_image()
    assert psnr(image, image.copy()) == math.inf


def test_psnr_of_known_error() -> None:
    image = Image.new("RGB", (16, 16), (100, 100, 100))
    assert psnr(image, _shifted(image, 5)) == pytest.approx(10 * math.log10(255**2 / 25))


def test_psnr_refuses_size_mismatch() -> None:
    with pytest.raises(ValueError, match="sizes differ"):
        psnr(_noise_image(), _noise_image(size=(128, 192)))


def test_ms_ssim_identical_and_degraded() -> None:
    image = _noise_image()
    assert quality.ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    noisy = _noise_image(seed=1)
    assert quality.ms_ssim(image, noisy) < quality.ms_ssim(image, _shifted(image, 3)) < 1.0


def test_ssimulacra2_orders_distortions() -> None:
    image = _noise_image()
    assert quality.ssimulacra2(image, image) == pytest.approx(100.0)
    mild, strong = _shifted(image, 2), _noise_image(seed=1)
    assert quality.ssimulacra2(image, strong) < quality.ssimulacra2(image, mild) < 100.0


def test_bits_per_pixel() -> None:
    assert bits_per_pixel(4915, 768, 512) == pytest.approx(0.1, abs=1e-4)


def test_bd_rate_of_curve_against_itself_is_zero() -> None:
    assert bdrate.bd_rate((RATES, PSNRS), (RATES, PSNRS)) == pytest.approx(0.0, abs=1e-9)
    assert bdrate.bd_quality((RATES, PSNRS), (RATES, PSNRS)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("factor, expected", [(0.5, -50.0), (2.0, 100.0), (0.8, -20.0)])
def test_bd_rate_of_scaled_rates(factor: float, expected: float) -> None:
    test_rates = [r * factor for r in RATES]
    assert bdrate.bd_rate((RATES, PSNRS), (test_rates, PSNRS)) == pytest.approx(expected)


def test_bd_rate_ignores_point_order() -> None:
    half = [r / 2 for r in RATES]
    assert bdrate.bd_rate((RATES[::-1], PSNRS[::-1]), (half, PSNRS)) == pytest.approx(-50.0)


def test_bd_quality_of_constant_gain() -> None:
    better = [p + 1.5 for p in PSNRS]
    assert bdrate.bd_quality((RATES, PSNRS), (RATES, better)) == pytest.approx(1.5)


def test_bd_rate_uses_only_the_overlap() -> None:
    # The test curve covers only the upper part of the reference's quality range, with half
    # the rate there: the result must not be diluted by the part it does not cover. Curves
    # linear in log-rate, which PCHIP reproduces exactly whatever the points.
    rates = np.array([0.05, 0.08, 0.12, 0.2, 0.3])
    psnrs = 30 + 4 * np.log(rates)
    assert bdrate.bd_rate((rates, psnrs), (rates[2:] / 2, psnrs[2:])) == pytest.approx(-50.0)


def test_bd_rate_matches_closed_form_for_log_linear_curves() -> None:
    # quality = a + b*ln(rate) on both curves: BD-rate is exp(-(a2-a1)/b) - 1 exactly.
    rates = np.array([0.05, 0.1, 0.2, 0.4])
    ref_q, test_q = 30 + 4 * np.log(rates), 31 + 4 * np.log(rates)
    expected = (math.exp(-1 / 4) - 1) * 100
    assert bdrate.bd_rate((rates, ref_q), (rates, test_q)) == pytest.approx(expected)


def test_bd_fails_without_overlap() -> None:
    with pytest.raises(ValueError, match="do not overlap"):
        bdrate.bd_rate((RATES, PSNRS), (RATES, [p + 10 for p in PSNRS]))
    with pytest.raises(ValueError, match="do not overlap"):
        bdrate.bd_quality((RATES, PSNRS), ([r * 10 for r in RATES], PSNRS))


@pytest.mark.parametrize(
    "rates, qualities",
    [([0.1], [20.0]), ([0.1, 0.2], [20.0, 20.0]), ([0.1, -0.2], [20.0, 21.0]),
     ([0.1, 0.2], [20.0, math.nan])],
)  # fmt: skip
def test_bd_rejects_bad_curves(rates: list[float], qualities: list[float]) -> None:
    with pytest.raises(ValueError):
        bdrate.bd_rate((rates, qualities), (RATES, PSNRS))


def test_bd_fails_on_a_sliver_of_overlap() -> None:
    # The curves share 1% of the narrower one's quality range: too little to mean anything.
    shifted = [p + 0.99 * (PSNRS[-1] - PSNRS[0]) for p in PSNRS]
    with pytest.raises(bdrate.NoOverlap):
        bdrate.bd_rate((RATES, PSNRS), (RATES, shifted))


def _points(method: str, rates: list[float], shift: float = 0.0) -> list[report.Point]:
    return [
        report.Point(method, f"q={i}", r, q + shift, 1 - 10 ** (-(q + shift) / 20),
                     4 * (q + shift) - 100, (q + shift) / 3, 0.0, 0.0)
        for i, (r, q) in enumerate(zip(rates, PSNRS, strict=True))
    ]  # fmt: skip


def test_bd_table_rows_per_method_on_every_metric() -> None:
    points = [
        *_points("anchor", RATES),
        *_points("half the bytes", [r / 2 for r in RATES]),
        *_points("twice the bytes", [r * 2 for r in RATES]),
        *_points("far better", RATES, shift=50.0),
    ]
    methods = ["anchor", "half the bytes", "twice the bytes", "far better", "absent"]
    table = report.bd_table(points, "anchor", methods)
    assert table[0] == ["method", "PSNR %", "MS-SSIM %", "SSIMU2 %", "CVVDP %", "BD-PSNR dB"]
    rows = {row[0]: row[1:] for row in table[1:]}
    assert list(rows) == methods[:-1]
    assert rows["anchor"] == ["—"] * 5
    assert rows["half the bytes"][:4] == ["-50.0"] * 4
    assert rows["twice the bytes"][:4] == ["+100.0"] * 4
    assert rows["far better"] == ["no overlap"] * 4 + ["+50.00"]  # same rates: BD-PSNR exists


def test_gaussian_blur_matches_torchvision_definition() -> None:
    # torchvision's GaussianBlur: taps exp(-x²/2σ²) at integer offsets, normalized, borders
    # reflected without repeating the edge: scipy's `mirror` mode with the same radius.
    from scipy.ndimage import gaussian_filter

    x = np.random.default_rng(0).random((2, 1, 40, 30)).astype(np.float32)
    blurred = cvvdp.GaussianBlur(13, 3.0)(torch.from_numpy(x)).numpy()
    expected = gaussian_filter(x, sigma=(0, 0, 3, 3), truncate=2.0, mode="mirror")
    np.testing.assert_allclose(blurred, expected, atol=1e-5)


@needs_cvvdp
def test_cvvdp_ranks_less_distortion_higher() -> None:
    image = _noise_image()
    assert cvvdp.jod(image, image) == pytest.approx(10.0, abs=1e-3)
    mild, strong = _shifted(image, 2), _noise_image(seed=1)
    assert cvvdp.jod(image, strong) < cvvdp.jod(image, mild) < 10.0


@needs_cvvdp
def test_cvvdp_leaves_no_torchvision_stand_in() -> None:
    cvvdp.jod(_noise_image(), _noise_image())
    for name in ("torchvision", "torchvision.transforms", "torchvision.ops"):
        left = sys.modules.get(name)
        assert left is None or getattr(left, "__spec__", None) is not None, name


def test_cvvdp_refuses_size_mismatch() -> None:
    with pytest.raises(ValueError, match="sizes differ"):
        cvvdp.jod(_noise_image(), _noise_image(size=(128, 192)))
