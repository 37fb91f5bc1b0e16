"""The contract every quantization + entropy-coding method follows (after CompressAI).

A method turns a scaled float latent `(C, H, W)` into two byte strings, `params` (small,
stored in the file header: step sizes, palette size, …) and `payload` (the coded symbols),
and back; `round_trip` gives the latent such a file holds, for searches that quantize many
candidates. `decompress` must raise `LatentFileError` (never anything else) on bytes that do not
parse, and must not allocate more than the `shape` it is given implies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Compressed:
    """What a method produces: header parameters and the coded payload."""

    params: bytes
    payload: bytes


class QuantizationMethod(ABC):
    """A way to store a latent in few bytes. Subclasses set `name`, `id`, `default_quality`."""

    name: ClassVar[str]
    id: ClassVar[int]
    default_quality: ClassVar[int] = 75

    @abstractmethod
    def compress(self, latent: np.ndarray, quality: int) -> Compressed:
        """Code a float32 latent `(C, H, W)` at `quality` (1 = smallest, 100 = best)."""

    @abstractmethod
    def decompress(self, params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """The float32 latent `(C, H, W)` that `compress` coded."""

    def round_trip(self, latent: np.ndarray, quality: int, exact: bool = True) -> np.ndarray:
        """The float32 latent a file of `latent` at `quality` holds.

        `exact=False` allows a cheaper close approximation where a method has one (a search's
        inner loop); by default both are `decompress` of `compress`.
        """
        compressed = self.compress(latent, quality)
        return self.decompress(compressed.params, compressed.payload, latent.shape)
