"""Latent spaces: which diffusion model family a latent belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LatentFileError


@dataclass(frozen=True)
class LatentSpace:
    """A VAE latent space; latents are stored scaled (VAE latent x `scaling_factor`)."""

    name: str
    id: int
    scaling_factor: float
    channels: int = 4
    downscale: int = 8


SD1 = LatentSpace("sd1", 1, 0.18215)
SDXL = LatentSpace("sdxl", 2, 0.13025)
SPACES = {space.name: space for space in (SD1, SDXL)}
_BY_ID = {space.id: space for space in SPACES.values()}


def space_by_id(space_id: int) -> LatentSpace:
    """Look a latent space up by the id stored in a file."""
    try:
        return _BY_ID[space_id]
    except KeyError:
        raise LatentFileError(f"unknown latent space id {space_id}") from None


def space_for_scaling_factor(scaling_factor: float) -> LatentSpace:
    """The space whose VAE uses this scaling factor (as in an `AutoencoderKL` config)."""
    for space in SPACES.values():
        if abs(space.scaling_factor - scaling_factor) < 1e-4:
            return space
    raise ValueError(
        f"VAE scaling_factor {scaling_factor} matches no known latent space "
        f"({', '.join(f'{s.name}={s.scaling_factor}' for s in SPACES.values())})"
    )
