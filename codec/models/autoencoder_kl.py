"""The full SD VAE (`diffusers.AutoencoderKL`): hub id, diffusers folder, or a single file."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..spaces import LatentSpace, space_for_scaling_factor
from .base import LatentAutoencoder

DEFAULT_HUB_ID = "stabilityai/sd-vae-ft-mse"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


class KLAutoencoder(LatentAutoencoder):
    """The full VAE; encodes take the posterior mean, latents are multiplied by the scale."""

    family = "kl"
    encoder_prefixes = ("encoder.", "quant_conv.")
    decoder_prefixes = ("decoder.", "post_quant_conv.")

    def encode_differentiable(self, images: torch.Tensor) -> torch.Tensor:
        posterior = self.module.encode(images * 2 - 1).latent_dist
        return posterior.mean * self.space.scaling_factor

    def decode_differentiable(self, latents: torch.Tensor) -> torch.Tensor:
        sample = self.module.decode(latents / self.space.scaling_factor).sample
        return (sample + 1) / 2


def load_kl(
    spec: str, device: torch.device, dtype: torch.dtype, space: LatentSpace | None = None
) -> KLAutoencoder:
    """Load the full VAE; a single file takes its config from a `config.json` beside it if any."""
    path = Path(spec)
    if path.is_file():
        config = str(path.parent) if (path.parent / "config.json").is_file() else None
        module = AutoencoderKL.from_single_file(spec, config=config, torch_dtype=torch.float32)
    else:
        module = AutoencoderKL.from_pretrained(spec, torch_dtype=torch.float32)
    space = space or space_for_scaling_factor(module.config.scaling_factor)
    return KLAutoencoder(module, space, spec, device, dtype)
