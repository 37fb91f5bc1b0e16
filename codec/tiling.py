"""Run a model over large tensors in overlapping tiles, blended so that no seam shows."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """(start, size) of the fewest tiles of at most `tile` covering `length`, all of one size
    and evenly spaced, neighbours sharing at least `overlap` (less by under `align` where
    starts and sizes are rounded to multiples of `align`): a length just over `tile` gets two
    tiles of about half, not two full tiles that mostly overlap."""
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, align * math.ceil((length + (count - 1) * overlap) / count / align))
    step = (length - size) / (count - 1)
    return [(align * round(i * step / align), size) for i in range(count)]


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
    align: int = 1,
) -> torch.Tensor:
    """Apply `fn` (which scales H and W by `scale`) to `x` `(B, C, H, W)` tile by tile
    (`tile_spans`, starts and sizes multiples of `align`).

    Inputs no larger than `tile` go through `fn` whole, so small images are exact. The
    overlap is capped at half a tile. Tiles are blended in float32 on `fn`'s device; the
    result has `fn`'s dtype.
    """
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return fn(x)
    overlap = min(overlap, tile // 2)
    rows, columns = (tile_spans(n, tile, overlap, align) for n in (height, width))
    out = weights = None
    for y, tile_h in rows:
        for x0, tile_w in columns:
            part = fn(x[..., y : y + tile_h, x0 : x0 + tile_w])
            if out is None:
                out_h, out_w = round(height * scale), round(width * scale)
                out = torch.zeros(*part.shape[:2], out_h, out_w, device=part.device)
                weights = torch.zeros(out_h, out_w, device=part.device)
            ph, pw = part.shape[-2:]
            oy, ox, ov = round(y * scale), round(x0 * scale), round(overlap * scale)
            mask = torch.outer(
                _ramp(ph, ov, y == rows[0][0], y == rows[-1][0]),
                _ramp(pw, ov, x0 == columns[0][0], x0 == columns[-1][0]),
            ).to(part.device)
            out[..., oy : oy + ph, ox : ox + pw] += part * mask
            weights[oy : oy + ph, ox : ox + pw] += mask
    return (out / weights).to(part.dtype)
