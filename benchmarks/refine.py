"""Encoder-side refinement: rate, PSNR and seconds of each effort level, on the auto device.

    python -m benchmarks.refine --kodak DIR --weights DIR --images 24 \\
        --qualities 70 75 80 --efforts 0 1 3 5 7 9

For each image: the plain encoder's latent (timed), its float round trip through the decoder,
then at each quality and effort the latent (moved by the learned correction where one serves
these models) refined and coded to a file by `Codec.compress` (encode seconds: encoder +
correction + refinement + coding) and decoded (decode seconds). The highest effort's and the
plain files are also decoded by a second decoder (`--cross-decoder`, e.g. the full SD VAE; by
default a tiny random AutoencoderKL, which only proves that path runs). The 2022 `palette`
baseline is coded from the plain latent at `--baseline-qualities`. Prints one row per quality
and effort, the PSNR at `--at-bpp` interpolated per effort, and each effort's BD-rate (PSNR)
against the baseline; writes per-image CSV rows.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from codec import Codec, CodecSettings, load_codec, unpack
from codec.images import tensor_to_image
from codec.measures import bits_per_pixel, psnr
from codec.models import LatentAutoencoder, load_autoencoder
from codec.refine import steps_for
from codec.transform import correct, latent_of

from .bdrate import bd_rate
from .common import DEFAULT_KODAK, DEFAULT_OUT, DEFAULT_WEIGHTS, image_paths, machine, uncorrected
from .report import text_table

BASELINE = "palette"
BASELINE_QUALITIES = (100, 88, 63, 35)
"""The palette settings `benchmarks.rd` picks on Kodak (0.05 to 0.15 bpp)."""
COLUMNS = [
    "method", "image", "quality", "effort", "steps", "bytes", "bpp", "psnr", "float_psnr",
    "encode_s", "decode_s", "cross_decoder", "cross_psnr", "machine",
]  # fmt: skip


def _seconds(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` and its wall seconds (CUDA work finished)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def _cross_decoder(spec: str | None) -> tuple[str, LatentAutoencoder]:
    """The second decoder: a model spec, or a tiny random AutoencoderKL (path check only)."""
    if spec:
        return spec, load_autoencoder(spec, "auto")
    from tests.tiny_models import tiny_kl

    return "tiny-random-kl (path check only)", tiny_kl()


def image_rows(
    codecs: tuple[Codec, Codec],
    cross: tuple[str, LatentAutoencoder],
    path: Path,
    qualities,
    efforts,
    baseline_qualities,
) -> list[dict]:
    """CSV rows of one image: the baseline at its qualities, then every quality and effort;
    `codecs` are the codec and the same without its correction (`uncorrected`), which codes
    the baseline."""
    codec, plain = codecs
    image = Image.open(path).convert("RGB")
    latent, latent_s = _seconds(latent_of, codec, image, corrected=False)
    float_image = codec.decode_latents(torch.from_numpy(latent)[None])[0]
    float_psnr = psnr(image, tensor_to_image(float_image[:, : image.height, : image.width]))
    cross_name, cross_model = cross

    def row(coded_by: Codec, method: str, quality: int, effort: int, latent_used: np.ndarray,
            extra_s: float) -> tuple[dict, bytes]:  # fmt: skip
        encoded, compress_s = _seconds(coded_by.compress, image, latent=latent_used,
                                       method=method, quality=quality, effort=effort)  # fmt: skip
        data = encoded.data
        decoded, decode_s = _seconds(codec.decompress, data)
        return {
            "method": method, "image": path.stem, "quality": quality, "effort": effort,
            "steps": steps_for(effort), "bytes": len(data),
            "bpp": bits_per_pixel(len(data), *image.size), "psnr": psnr(image, decoded),
            "float_psnr": float_psnr, "encode_s": latent_s + extra_s + compress_s,
            "decode_s": decode_s, "cross_decoder": "", "cross_psnr": "",
            "machine": machine(codec.decoder.device.type),
        }, data  # fmt: skip

    rows = [row(plain, BASELINE, quality, 0, latent, 0.0)[0] for quality in baseline_qualities]
    start, correct_s = _seconds(correct, codec, latent)
    for quality in qualities:
        for effort in efforts:
            result, data = row(codec, codec.settings.method, quality, effort, start, correct_s)
            rows.append(result)
            if effort in (min(efforts), max(efforts)):
                stored = torch.from_numpy(unpack(data, codec.decoder.space)[1])[None]
                other = cross_model.decode(stored)[0, :, : image.height, : image.width]
                rows[-1] |= {
                    "cross_decoder": cross_name,
                    "cross_psnr": psnr(image, tensor_to_image(other)),
                }
    return rows


def summary(rows: list[dict], at_bpp: float) -> tuple[list[list[str]], list[list[str]]]:
    """Mean table by method, quality and effort, and by effort the PSNR at `at_bpp`
    (interpolated) and the BD-rate against the baseline."""
    float_psnr = np.mean(list({r["image"]: r["float_psnr"] for r in rows}.values()))
    header = ["method", "quality", "effort", "steps", "bpp", "PSNR", "vs float", "encode s",
              "decode s", "cross PSNR"]  # fmt: skip
    table, curves = [header], {}
    for key in sorted({(r["method"], r["quality"], r["effort"]) for r in rows}):
        group = [r for r in rows if (r["method"], r["quality"], r["effort"]) == key]
        bpp, quality = np.mean([r["bpp"] for r in group]), np.mean([r["psnr"] for r in group])
        cross = [r["cross_psnr"] for r in group if r["cross_psnr"] != ""]
        curves.setdefault((key[0], key[2]), []).append((bpp, quality))
        table.append([
            key[0], str(key[1]), str(key[2]), str(group[0]["steps"]), f"{bpp:.4f}",
            f"{quality:.2f}",
            f"{quality - float_psnr:+.2f}", f"{np.mean([r['encode_s'] for r in group]):.2f}",
            f"{np.mean([r['decode_s'] for r in group]):.2f}",
            f"{np.mean(cross):.2f}" if cross else "",
        ])  # fmt: skip
    baseline = curves.pop((BASELINE, 0), None)
    at = [["effort", f"PSNR at {at_bpp} bpp", "vs float", f"BD-rate vs {BASELINE} (PSNR)"]]
    for (_, effort), points in sorted(curves.items(), key=lambda item: item[0][1]):
        bpps, psnrs = zip(*sorted(points), strict=True)
        row = [str(effort), f"outside {bpps[0]:.3f}..{bpps[-1]:.3f}", ""]
        if bpps[0] <= at_bpp <= bpps[-1]:
            value = float(np.interp(at_bpp, bpps, psnrs))
            row[1:] = [f"{value:.2f}", f"{value - float_psnr:+.2f}"]
        row.append(_bd(baseline, points))
        at.append(row)
    return table, at


def _bd(baseline: list[tuple[float, float]] | None, points: list[tuple[float, float]]) -> str:
    """BD-rate of `points` against the baseline's, or why there is none."""
    if not baseline:
        return "no baseline"
    try:
        curves = (tuple(zip(*c, strict=True)) for c in (baseline, points))
        return f"{bd_rate(*curves):+.1f}%"
    except ValueError as exc:
        return f"n/a ({exc})"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print and save its results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.refine", description=__doc__)
    parser.add_argument("--kodak", type=Path, default=DEFAULT_KODAK, help="folder of Kodak PNGs")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="TAESD folder")
    parser.add_argument("--images", type=int, default=24, help="use the first N images")
    parser.add_argument("--qualities", type=int, nargs="+", default=[70, 75, 80])
    parser.add_argument("--efforts", type=int, nargs="+", default=[0, 1, 3, 5, 7, 9])
    parser.add_argument(
        "--baseline-qualities", type=int, nargs="*", default=list(BASELINE_QUALITIES),
        help=f"{BASELINE} qualities for the BD-rate (none: leave the baseline out)",
    )  # fmt: skip
    parser.add_argument("--cross-decoder", help="model spec of a second decoder (SD VAE)")
    parser.add_argument("--at-bpp", type=float, default=0.15, help="rate of the summary line")
    parser.add_argument("--device", default="auto", help="auto: cuda, then mps, then cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV folder")
    args = parser.parse_args(argv)
    if not args.weights.exists():
        raise SystemExit(f"{args.weights} is missing: pass --weights (the TAESD folder)")
    weights = str(args.weights)
    codec = load_codec(CodecSettings(encoder=weights, decoder=weights, device=args.device))
    codec.load()
    cross = _cross_decoder(args.cross_decoder)
    print(f"machine: {machine(codec.decoder.device.type)}", flush=True)
    print(f"decoder {codec.decoder.describe()}; second decoder {cross[0]}", flush=True)
    print(f"encode plan: {codec.plan.describe()}", flush=True)
    out = args.out / f"refine-{codec.decoder.device.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, codecs = [], (codec, uncorrected(codec))
    with out.open("w", newline="") as file:  # rows written as they come: a cut run keeps them
        writer = csv.DictWriter(file, COLUMNS)
        writer.writeheader()
        for path in image_paths(args.kodak, args.images):
            new = image_rows(
                codecs, cross, path, args.qualities, sorted(args.efforts), args.baseline_qualities
            )
            writer.writerows(new)
            file.flush()
            rows += new
            print(f"{path.stem}: {len(rows)} rows", flush=True)
    table, at = summary(rows, args.at_bpp)
    print(text_table(table), text_table(at), sep="\n\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
