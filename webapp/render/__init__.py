"""Renders: stored latents -> PNG and AVIF bytes, decoded on demand and cached.

`service.Renderer` is the one entry (`render`, `warm`, `put_decoded`); `batcher` owns the
decode thread, `formats` makes the bytes, `sizes` names the widths.
"""

from .service import PAGE_FORMAT, Renderer

__all__ = ["PAGE_FORMAT", "Renderer"]
