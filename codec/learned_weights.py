"""Learned-weights files: a correction's, a thumbnail decoder's, a preview map's.

Each is a safetensors file whose metadata names its `format`, what it was made for (its
binding: models' fingerprints at bfloat16 precision, so a float32 release of the same weights
and its bfloat16 re-save both match, or a latent space) and notes. `LearnedWeights` describes
one kind of file: it writes and reads them, and finds the one a setting asks for: none
(`off`), the shipped one in its folder of `codec/weights/` made for the models at hand
(`auto`), or the one at a path, which must be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .atomic import atomic_write
from .errors import ModelLoadError
from .models import LatentAutoencoder

WEIGHTS = Path(__file__).resolve().parent / "weights"
"""The shipped learned weights."""
T = TypeVar("T")


@dataclass(frozen=True)
class LearnedWeights(Generic[T]):
    """One kind of learned-weights file: `build` makes its object of the file's tensors and
    metadata (raising `ValueError`, `KeyError` or `RuntimeError` if they are not one)."""

    format: str
    """The metadata's `format`."""
    name: str
    """What the file holds, for errors (`latent correction`)."""
    command: str
    """The command that writes one, for errors."""
    setting: str | None
    """The variable that chooses one (`auto`, `off` or a path), if any."""
    folder: Path
    """Where the shipped files are."""
    binding: tuple[str, ...]
    """The metadata naming what a file was made for."""
    build: Callable[[dict[str, torch.Tensor], dict[str, str]], T]

    def save(
        self, path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
    ) -> None:
        """Write `tensors` (as float32) and `metadata` (the binding's included) as a file of
        this kind, atomically."""
        tensors = {k: v.detach().cpu().float().contiguous() for k, v in tensors.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, save(tensors, metadata={"format": self.format, **metadata}))

    def read(self, path: Path) -> tuple[T, dict[str, str]]:
        """A file's object and its binding (`ModelLoadError` if it is not a file of this kind)."""
        try:
            with safe_open(str(path), "pt") as file:
                meta = file.metadata() or {}
                state = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
            if meta.get("format") != self.format:
                raise ValueError(f"no {self.name} metadata")
            return self.build(state, meta), {key: meta[key] for key in self.binding}
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
            raise ModelLoadError(
                f"{path}: not a {self.name} file ({error}); write one with {self.command}"
                + (f", or set {self.setting}=auto or off" if self.setting else "")
            ) from None

    def candidates(self, setting: str, folder: Path | None = None) -> list[Path]:
        """The files `setting` chooses among: none (`off`), every file in `folder` (by default
        the shipped one; `auto`), or the one at its path."""
        if setting == "off":
            return []
        if setting == "auto":
            return sorted((folder or self.folder).glob("*.safetensors"))
        return [Path(setting)]

    def find(self, wanted: Mapping[str, str], folder: Path | None = None) -> T | None:
        """The first file in `folder` (by default the shipped one) made for `wanted`, or None."""
        for path in self.candidates("auto", folder):
            found, made_for = self.read(path)
            if made_for == wanted:
                return found
        return None

    def resolve(
        self, setting: str, wanted: Mapping[str, str], folder: Path | None = None
    ) -> T | None:
        """What `setting` asks for: none (`off`), the file in `folder` made for `wanted` if
        there is one (`auto`), or the file at a path, which must be made for `wanted`."""
        if setting == "off":
            return None
        if setting == "auto":
            return self.find(wanted, folder)
        found, made_for = self.read(Path(setting))
        if made_for != wanted:
            raise ModelLoadError(
                f"{setting} was made for other models ({_describe(made_for)}; these are "
                f"{_describe(wanted)}): write one for them with {self.command}, or set "
                f"{self.setting}=auto"
            )
        return found


def _describe(binding: Mapping[str, str]) -> str:
    """A binding in words: `encoder 0123…, decoder 4567…`."""
    return ", ".join(f"{key} {value}" for key, value in binding.items())


def made_for(
    *, encoder: LatentAutoencoder | None = None, decoder: LatentAutoencoder | None = None
) -> dict[str, str]:
    """The binding of a file made for `encoder`, `decoder` or both: their fingerprints at
    bfloat16 precision."""
    binding = {}
    if encoder is not None:
        binding["encoder"] = encoder.rounded_fingerprints[0].hex()
    if decoder is not None:
        binding["decoder"] = decoder.rounded_fingerprints[1].hex()
    return binding
