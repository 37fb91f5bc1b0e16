"""Run a model over large tensors in overlapping tiles, blended so that no seam shows."""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering `length`, neighbours sharing `overlap`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _ramp(size: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """Blend weights along one axis over the overlap, unless at the border.

    The outer quarter of an overlap gets weight 0 (what a model sees near a tile's edge is
    least like the whole-image result), the rest rises linearly.
    """
    weight = torch.ones(size)
    margin = overlap // 4
    if overlap > 0:
        ramp = (torch.arange(overlap, dtype=torch.float32) - margin + 0.5) / (overlap - margin)
        ramp = ramp.clamp(0, 1)
        if not first:
            weight[:overlap] = ramp
        if not last:
            weight[-overlap:] = ramp.flip(0)
    return weight


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    scale: float,
) -> torch.Tensor:
    """Apply `fn` (which scales H and W by `scale`) to `x` `(B, C, H, W)` tile by tile.

    Inputs no larger than `tile` go through `fn` whole, so small images are exact. The
    overlap is capped at half a tile. Tiles are blended in float32 on `fn`'s device; the
    result has `fn`'s dtype.
    """
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return fn(x)
    overlap = min(overlap, tile // 2)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    out = weights = None
    for y in ys:
        for x0 in xs:
            part = fn(x[..., y : y + tile, x0 : x0 + tile])
            if out is None:
                out_h, out_w = round(height * scale), round(width * scale)
                out = torch.zeros(*part.shape[:2], out_h, out_w, device=part.device)
                weights = torch.zeros(out_h, out_w, device=part.device)
            ph, pw = part.shape[-2:]
            oy, ox, ov = round(y * scale), round(x0 * scale), round(overlap * scale)
            mask = torch.outer(
                _ramp(ph, ov, y == ys[0], y == ys[-1]), _ramp(pw, ov, x0 == xs[0], x0 == xs[-1])
            ).to(part.device)
            out[..., oy : oy + ph, ox : ox + pw] += part * mask
            weights[oy : oy + ph, ox : ox + pw] += mask
    return (out / weights).to(part.dtype)
