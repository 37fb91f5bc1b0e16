"""Summaries of benchmark rows: tables, BD-rates, CSV files, the rate-distortion plot."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator

from .bdrate import NoOverlap, bd_quality, bd_rate

CEILING = "float latent"
UNCORRECTED = "(plain encoder)"
"""Suffix of the series coded from the encoder's latent without the learned correction."""
UNREFINED = "(effort 0)"
"""Suffix of the series coded from the corrected latent without refinement."""
METRICS = ("psnr", "ms_ssim", "ssimulacra2", "cvvdp")
NAMES = {"psnr": "PSNR", "ms_ssim": "MS-SSIM", "ssimulacra2": "SSIMU2", "cvvdp": "CVVDP"}
LABELS = {"psnr": "PSNR dB", "ms_ssim": "MS-SSIM", "ssimulacra2": "SSIMU2", "cvvdp": "CVVDP JOD"}
"""Short names of the metrics, and as column headers (with units)."""
COLUMNS = (
    "method",
    "setting",
    "image",
    "quality",
    "bytes",
    "bpp",
    *METRICS,
    "encode_s",
    "decode_s",
    "machine",
)


@dataclass(frozen=True)
class Point:
    """Means over the images of one method at one setting."""

    method: str
    setting: str
    bpp: float
    psnr: float
    ms_ssim: float
    ssimulacra2: float
    cvvdp: float
    encode_s: float
    decode_s: float


def summarize(rows: Sequence[dict]) -> list[Point]:
    """One point per (method, setting), in first-seen order, averaging over images."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["setting"]), []).append(row)
    return [
        Point(method, setting, *(float(np.mean([r[k] for r in group])) for k in (
            "bpp", *METRICS, "encode_s", "decode_s")))
        for (method, setting), group in groups.items()
    ]  # fmt: skip


def curves(points: Sequence[Point]) -> dict[str, list[Point]]:
    """Points grouped by method (the ceiling left out), sorted by rate."""
    grouped: dict[str, list[Point]] = {}
    for point in points:
        if point.method != CEILING:
            grouped.setdefault(point.method, []).append(point)
    return {m: sorted(ps, key=lambda p: p.bpp) for m, ps in grouped.items()}


def msssim_db(value: float) -> float:
    """MS-SSIM as -10·log10(1 - MS-SSIM), the usual scale for BD computations."""
    return -10 * math.log10(max(1 - value, 1e-12))


def _metric(point: Point, metric: str) -> float:
    return msssim_db(point.ms_ssim) if metric == "ms_ssim" else getattr(point, metric)


def _cell(fn, ref: list[Point], test: list[Point], metric: str, fmt: str) -> str:
    try:
        value = fn(*(([p.bpp for p in c], [_metric(p, metric) for p in c]) for c in (ref, test)))
    except NoOverlap:
        return "no overlap"
    except ValueError:
        return "n/a"
    return format(value, fmt)


def bd_table(points: Sequence[Point], anchor: str, methods: Sequence[str]) -> list[list[str]]:
    """BD-rate (%) on each metric and BD-PSNR (dB) against `anchor`, a row for each of `methods`
    that has points ("—" for the anchor itself)."""
    by_method = curves(points)
    table = [["method", *(f"{NAMES[m]} %" for m in METRICS), "BD-PSNR dB"]]
    for method in (m for m in methods if m in by_method):
        if method == anchor:
            table.append([method, *["—"] * (len(METRICS) + 1)])
            continue
        ref, test = by_method[anchor], by_method[method]
        table.append([method, *(_cell(bd_rate, ref, test, m, "+.1f") for m in METRICS),
                      _cell(bd_quality, ref, test, "psnr", "+.2f")])  # fmt: skip
    return table


def _pchip_at(x: Sequence[float], y: Sequence[float], at: float) -> float:
    order = np.argsort(x)
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    if len(xs) < 2 or np.any(np.diff(xs) <= 0) or not xs[0] <= at <= xs[-1]:
        return math.nan
    return float(PchipInterpolator(xs, ys)(at))


def at_anchor(points: Sequence[Point], anchor: Point) -> list[list[str]]:
    """PSNR of each method at the anchor's rate and its rate at the anchor's PSNR."""
    table = [["method", f"PSNR at {anchor.bpp:.4f} bpp", f"bpp at {anchor.psnr:.2f} dB"]]
    for method, ps in curves(points).items():
        logs = [math.log(p.bpp) for p in ps]
        psnr_there = _pchip_at(logs, [p.psnr for p in ps], math.log(anchor.bpp))
        log_rate = _pchip_at([p.psnr for p in ps], logs, anchor.psnr)
        rate = math.exp(log_rate) if math.isfinite(log_rate) else math.nan
        saving = f" ({(rate / anchor.bpp - 1) * 100:+.0f}%)" if math.isfinite(rate) else ""
        table.append([method, _num(psnr_there, ".2f"), _num(rate, ".4f") + saving])
    return table


def _num(value: float, fmt: str) -> str:
    return format(value, fmt) if math.isfinite(value) else "out of range"


def summary_table(points: Sequence[Point]) -> list[list[str]]:
    """The main table: rate, quality and time of every setting."""
    table = [["method", "setting", "bpp", *LABELS.values(), "enc s/img", "dec s/img"]]
    for p in points:
        bpp = "—" if p.method == CEILING else f"{p.bpp:.4f}"
        table.append([
            p.method, p.setting, bpp, f"{p.psnr:.2f}", f"{p.ms_ssim:.4f}",
            f"{p.ssimulacra2:.1f}", f"{p.cvvdp:.2f}", f"{p.encode_s:.3f}", f"{p.decode_s:.3f}",
        ])  # fmt: skip
    return table


def text_table(table: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(table: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(row) + " |" for row in table]
    lines.insert(1, "|" + "---|" * len(table[0]))
    return "\n".join(lines)


def write_csv(rows: Sequence[dict], path: Path) -> None:
    """Per-image rows as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot(points: Sequence[Point], path: Path, title: str) -> None:
    """PSNR, MS-SSIM, SSIMULACRA 2 and ColorVideoVDP against bits per pixel, the ceiling
    dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "ssimulacra2": "SSIMULACRA 2",
              "cvvdp": "ColorVideoVDP (JOD)"}  # fmt: skip
    ceiling = [p for p in points if p.method == CEILING]
    figure, axes = plt.subplots(2, 2, figsize=(13, 10))
    for axis, metric in zip(axes.flat, METRICS, strict=True):
        for method, ps in curves(points).items():
            axis.plot([p.bpp for p in ps], [getattr(p, metric) for p in ps], "o-", label=method,
                      markersize=4)  # fmt: skip
        for p in ceiling:
            axis.axhline(
                getattr(p, metric), color="gray", linestyle="--", label="float latent (ceiling)"
            )
        axis.set_xlabel("bits per pixel")
        axis.set_ylabel(labels[metric])
        axis.set_xlim(0, 0.55)
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
