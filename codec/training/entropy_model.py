"""Learn the integer entropy model of `ec` from the latents of a set of photos.

    python -m codec.training.entropy_model --images DIR_OR_FILE [...] [--skimage] [--out FILE]
        [--cache DIR] [--steps 600]

Each photo (scaled to at most `--side` pixels, and a half-size copy) goes through the configured
encoder and the shipped correction (`LATENT_GALLERY_ENCODER`); latents are kept in `--cache`.
They are quantized at several qualities; per channel and phase a linear mean is fitted by
weighted least squares, then a small scale network by Adam on the discretized-Laplace code
length with fixed-point (rounded) weights; both are converted to integers, the frequency tables
are counted from the integer model's own outputs, and the real coded size of held-out latents
is measured with the integer model against `ec1`.
Exit status: 0, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..methods.ec.model import (
    ALPHABET,
    ENTROPY_MODELS,
    ESCAPES,
    FRACTIONS,
    HIDDEN,
    MAX_SYMBOL,
    MEAN_BITS,
    MODEL_ID,
    NET_SHIFT,
    RADIUS,
    SCALES,
    TABLE_BITS,
    EntropyModel,
    Predictor,
    model_tensors,
    spatial_count,
    split_mean,
    step_feature,
    to_alphabet,
)
from ..methods.ec.quantizer import compress, quantize
from ..methods.ec.walk import fit_means, predict, scale_inputs
from ..methods.ec1 import quantizer as ec1_quantizer
from ..methods.ec1.bitstream import encode as ec1_encode
from ..methods.ec1.context import Context, columns
from ..pipeline import Codec
from ..transform import latent_of
from .command import run_tool, tool_parser
from .data import read_photo

QUALITIES = (40, 50, 60, 70, 75, 80, 90, 95)
SAMPLE = 0.25
"""Fraction of each latent's rows kept for the scale networks and the tables."""
RECOUNT = 3
"""Every this many latents the tables are counted again from RDOQ's symbols."""
HELD_OUT = 8
"""Latents left out of training, on which the coded size is measured."""


def cached_latents(codec: Codec, paths: Sequence[Path], cache: Path, side: int) -> list[np.ndarray]:
    """The corrected latent of each photo at most `side` pixels a side and of a half-size copy,
    read from `cache` or computed and written there."""
    folder = cache / str(side)
    folder.mkdir(parents=True, exist_ok=True)
    latents = []
    for path in tqdm(paths, desc="encoding", unit="photo", file=sys.stderr):
        names = [folder / f"{path.stem}-{k}.npy" for k in range(2)]
        if not all(name.exists() for name in names):
            photo = read_photo(path)
            if photo is None:
                continue
            scale = min(1.0, side / max(photo.size))
            for k, name in enumerate(names):
                s = scale / (1 << k)
                size = (max(8, round(photo.width * s)), max(8, round(photo.height * s)))
                np.save(name, latent_of(codec, photo.resize(size, Image.LANCZOS)))
        latents += [np.load(name).astype(np.float64) for name in names]
    return latents


def _symbols(latent: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    steps = ec1_quantizer.channel_steps(quality, len(latent))
    symbols = np.clip(np.round(latent / steps[:, None, None]), -MAX_SYMBOL, MAX_SYMBOL)
    return symbols.astype(np.int64), step_feature(steps)


def _rows(height: int, generator: np.random.Generator) -> np.ndarray:
    return np.sort(generator.choice(height, max(1, round(height * SAMPLE)), replace=False))


def scale_samples(
    latents: Sequence[np.ndarray], seed: int
) -> tuple[dict[tuple[int, int], tuple[np.ndarray, ...]], np.ndarray]:
    """Per channel and phase: scale-network inputs `(N, F)`, symbols and integer means (under
    each image's fitted predictor) of a sample of rows of every latent at every quality; and
    all the fitted predictor weights."""
    generator = np.random.default_rng(seed)
    parts: dict[tuple[int, int], list] = {}
    weights = []
    for latent in tqdm(latents, desc="samples", unit="latent", file=sys.stderr):
        for quality in QUALITIES:
            symbols, steps = _symbols(latent, quality)
            coefs, means = fit_means(symbols)
            weights += [w[1:] for w in coefs.values()]
            channels, height, width = symbols.shape
            ctx = Context(channels, height, width)
            ctx.state[0, :, 1:] = symbols
            ctx.state[1, :, 1:] = np.abs((symbols << MEAN_BITS) - means)
            rows = _rows(height, generator)
            for c in range(channels):
                for p in (0, 1):
                    x = columns(width, p)[0]
                    mean_idx, scale_idx = ctx.feature_index(c, p)
                    m = means[c][rows][:, x]
                    inputs = scale_inputs(ctx.flat[scale_idx[:, rows]], ctx.flat[mean_idx[:, rows]],
                                          m, steps[c], spatial_count(p))  # fmt: skip
                    parts.setdefault((c, p), []).append(
                        (
                            inputs.reshape(len(inputs), -1).T,
                            symbols[c][rows][:, x].ravel(),
                            m.ravel(),
                        )
                    )
    samples = {k: tuple(np.concatenate(z) for z in zip(*v, strict=True)) for k, v in parts.items()}
    return samples, np.concatenate(weights)


def _laplace_nll(q: torch.Tensor, mu: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bits of integers `q` under discretized Laplaces (mean `mu`, scale `b`)."""
    lo, hi = (q - 0.5 - mu) / b, (q + 0.5 - mu) / b
    below = 0.5 * (torch.exp(torch.clamp(hi, max=0)) - torch.exp(torch.clamp(lo, max=0)))
    above = 0.5 * (torch.exp(-torch.clamp(lo, min=0)) - torch.exp(-torch.clamp(hi, min=0)))
    across = 1 - 0.5 * torch.exp(torch.clamp(lo, max=0)) - 0.5 * torch.exp(-torch.clamp(hi, min=0))
    mass = torch.where(hi <= 0, below, torch.where(lo >= 0, above, across))
    return -torch.log2(torch.clamp(mass, min=1e-9))


def _fake_quant(w: torch.Tensor, unit: float) -> torch.Tensor:
    """`w` rounded to multiples of `1 / unit` in the forward pass, unrounded in the backward."""
    return w + (torch.round(w * unit) / unit - w).detach()


def train_scale(
    inputs: np.ndarray, symbols: np.ndarray, means: np.ndarray, steps: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Integer `(w1, b1, w2, b2)` of a scale network fitted by Adam to the samples."""
    torch.manual_seed(seed)
    x = torch.from_numpy(inputs / float(1 << MEAN_BITS)).float()
    q = torch.from_numpy(symbols).float()
    mu = torch.from_numpy(means / float(1 << MEAN_BITS)).float()
    w1 = torch.nn.Parameter(torch.randn(HIDDEN, x.shape[1]) * 0.1)
    b1 = torch.nn.Parameter(torch.full((HIDDEN,), 0.1))
    w2 = torch.nn.Parameter(torch.full((HIDDEN,), 0.1))
    b2 = torch.nn.Parameter(torch.tensor(0.3))
    unit = float(1 << NET_SHIFT)
    optimizer = torch.optim.Adam([w1, b1, w2, b2], lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(x), (8192,), generator=generator)
        hidden = torch.relu(x[batch] @ _fake_quant(w1, unit).T + _fake_quant(b1, unit * 64))
        scale = torch.relu(hidden @ _fake_quant(w2, unit) + _fake_quant(b2, unit * 64)) + 1 / 64
        loss = _laplace_nll(q[batch], mu[batch], scale).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    fixed = float(1 << (MEAN_BITS + NET_SHIFT))

    def ints(t: torch.Tensor, u: float) -> np.ndarray:
        return np.clip(np.round(t.detach().double().numpy() * u), -(1 << 23), (1 << 23)).astype(
            np.int64
        )

    return ints(w1, unit), ints(b1, fixed), ints(w2, unit), int(ints(b2, fixed))


def thresholds() -> np.ndarray:
    """Scale thresholds: a quarter octave apart from `5 / 64` of a symbol."""
    return np.round(4 * 2.0 ** (np.arange(1, SCALES) / 4)).astype(np.int64)


def _laplace_table(sigma: float) -> np.ndarray:
    """A discretized Laplace over the alphabet's offsets (escape buckets by their width)."""
    centres = np.concatenate([np.arange(-RADIUS, RADIUS + 1),
                              np.repeat(RADIUS + 1.5 * 2.0 ** np.arange(ESCAPES), 2)])  # fmt: skip
    widths = np.concatenate([np.ones(2 * RADIUS + 1), np.repeat(2.0 ** np.arange(ESCAPES), 2)])
    p = widths * np.exp(-np.abs(centres) / sigma)
    return p / p.sum()


def frequency_tables(counts: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """16-bit tables (every entry at least 1) of counts `(S, F, A)`, smoothed toward each
    row's counts pooled over `F` and toward its `prior` `(S, A)`."""
    pooled = counts.sum(axis=1)
    row = (pooled + 16 * prior) / (pooled.sum(-1, keepdims=True) + 16)
    p = (counts + 32 * row[:, None]) / (counts.sum(-1, keepdims=True) + 32)
    total = 1 << TABLE_BITS
    freq = np.maximum(1, np.floor(p * (total - counts.shape[-1])).astype(np.int64))
    top = freq.argmax(-1)
    deficit = total - freq.sum(-1, keepdims=True)
    np.put_along_axis(
        freq, top[..., None], np.take_along_axis(freq, top[..., None], -1) + deficit, -1
    )
    return freq


def learn_model(latents: Sequence[np.ndarray], steps: int, seed: int) -> EntropyModel:
    """The integer model of `latents`: means, scale networks, then tables counted under them."""
    samples, weights = scale_samples(latents, seed)
    predictors = {}
    for key in tqdm(sorted(samples), desc="scale networks", unit="net", file=sys.stderr):
        predictors[key] = Predictor(*train_scale(*samples[key], steps, seed))
    bounds = thresholds()
    counts = np.zeros((SCALES, FRACTIONS, ALPHABET))
    for key, (inputs, symbols, means) in samples.items():
        rows = np.searchsorted(bounds, predictors[key].scales(inputs.T), side="right")
        _count(counts, rows, symbols, means)
    sigmas = np.concatenate([[3.0], bounds]) / float(1 << MEAN_BITS)
    prior = np.stack([_laplace_table(s) for s in sigmas])
    weight_counts = np.bincount(weights + 128, minlength=256).astype(np.float64)
    laplace = np.exp(-np.abs(np.arange(-128, 128)) / 8.0)
    weight_table = frequency_tables(weight_counts[None, None], (laplace / laplace.sum())[None])
    model = EntropyModel(predictors, bounds, frequency_tables(counts, prior), weight_table[0, 0])
    tables = recount(model, latents[::RECOUNT], prior)
    return EntropyModel(predictors, bounds, tables, weight_table[0, 0])


def _count(counts: np.ndarray, rows: np.ndarray, symbols: np.ndarray, means: np.ndarray) -> None:
    centre, fraction = split_mean(means)
    np.add.at(counts, (rows, fraction, to_alphabet(symbols - centre)[0]), 1)


def recount(model: EntropyModel, latents: Sequence[np.ndarray], prior: np.ndarray) -> np.ndarray:
    """Frequency tables counted from the symbols the encoder (with RDOQ) chooses under
    `model`, at every quality."""
    counts = np.zeros_like(model.frequencies, dtype=np.float64)
    for latent in tqdm(latents, desc="recount", unit="latent", file=sys.stderr):
        for quality in QUALITIES:
            q = quantize(model, latent, quality)
            scales = predict(model, q.coefs, q.symbols, step_feature(q.steps))[1]
            _count(counts, model.scale_index(scales, 0), q.symbols, q.means)
    return frequency_tables(counts, prior)


def measure(model: EntropyModel, latents: Sequence[np.ndarray], quality: int) -> tuple[int, int]:
    """Total coded bytes (params and payload) of `latents` under `model` and under `ec1`."""
    new = old = 0
    for latent in latents:
        coded = compress(MODEL_ID, model, quantize(model, latent, quality))
        new += len(coded.params) + len(coded.payload)
        coded = ec1_encode(ec1_quantizer.quantize(latent, quality))
        old += len(coded.params) + len(coded.payload)
    return new, old


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m codec.training.entropy_model`."""
    parser = tool_parser(ENTROPY_MODELS, __doc__, f"sd1-{MODEL_ID}.safetensors")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/latent-gallery-entropy"),
                        help="folder of the photos' latents, kept between runs")  # fmt: skip
    parser.add_argument("--side", type=int, default=1024, help="largest photo side, pixels")
    parser.add_argument("--steps", type=int, default=600, help="Adam steps per scale network")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Encode the photos, learn the model, measure it and write its file."""
    args = build_parser().parse_args(argv)

    def learn(codec: Codec, paths: list[Path]) -> str:
        latents = cached_latents(codec, paths, args.cache, args.side)
        if len(latents) <= HELD_OUT:
            raise ValueError(f"need more than {HELD_OUT // 2} photos, got {len(latents) // 2}")
        order = np.random.default_rng(args.seed).permutation(len(latents))
        train = [latents[i] for i in order[HELD_OUT:]]
        held = [latents[i] for i in order[:HELD_OUT]]
        model = learn_model(train, args.steps, args.seed)
        sizes = {q: measure(model, held, q) for q in (60, 75)}
        result = ", ".join(f"q{q} {new} bytes, ec1 {old} ({new / old - 1:+.1%})"
                           for q, (new, old) in sizes.items())  # fmt: skip
        space = codec.encoder.space
        notes = f"{len(train)} latents of {len(paths)} photos; {len(held)} held out: {result}"
        out = args.out or ENTROPY_MODELS.folder / f"{space.name}-{MODEL_ID}.safetensors"
        metadata = {"space": space.name, "channels": str(space.channels), "notes": notes}
        ENTROPY_MODELS.save(out, model_tensors(model), metadata)
        return f"wrote {out}: {notes}"

    return run_tool(args, learn)


if __name__ == "__main__":
    sys.exit(main())
