"""Rate control: pick the quality of each image's file for a size or a fidelity target."""

from __future__ import annotations

from collections.abc import Callable

from .container import OVERHEAD_BYTES
from .errors import CodecError

FileAt = Callable[[int], bytes]
"""The latent file of an image at a quality in 1..100."""


def largest_fitting(file_at: FileAt, target_bytes: int) -> bytes:
    """The file at the highest quality whose size is at most `target_bytes` (binary search)."""
    if target_bytes < OVERHEAD_BYTES:
        raise CodecError(f"--target-bytes {target_bytes} is below the {OVERHEAD_BYTES}-byte header")
    best = _search(file_at, lambda data: len(data) <= target_bytes, want_high=True)
    if best is None:
        raise CodecError(
            f"cannot fit this image in {target_bytes} bytes; the smallest file is "
            f"{len(file_at(1))} bytes"
        )
    return best


def smallest_reaching(
    file_at: FileAt, psnr_of: Callable[[bytes], float], target_psnr: float
) -> bytes:
    """The file at the lowest quality whose decoded PSNR is at least `target_psnr` (binary
    search; each candidate is decoded)."""
    scores: list[float] = []

    def reaches(data: bytes) -> bool:
        scores.append(psnr_of(data))
        return scores[-1] >= target_psnr

    best = _search(file_at, reaches, want_high=False)
    if best is None:
        raise CodecError(
            f"this image cannot reach {target_psnr:g} dB PSNR with this codec; the best "
            f"quality gives {max(scores):.2f} dB"
        )
    return best


def _search(file_at: FileAt, accept: Callable[[bytes], bool], want_high: bool) -> bytes | None:
    """Binary search over qualities 1..100 for the highest (or lowest) accepted file, assuming
    acceptance is monotone in quality (down for sizes, up for fidelity)."""
    low, high, best = 1, 100, None
    while low <= high:
        middle = (low + high) // 2
        candidate = file_at(middle)
        if accept(candidate):
            best = candidate
            low, high = (middle + 1, high) if want_high else (low, middle - 1)
        else:
            low, high = (low, middle - 1) if want_high else (middle + 1, high)
    return best
