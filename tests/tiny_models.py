"""Tiny randomly initialised diffusers autoencoders: real model classes, no download."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from codec.models import KLAutoencoder, TinyAutoencoder
from codec.spaces import SD1, LatentSpace

CPU = torch.device("cpu")


def tiny_taesd_module(seed: int = 0) -> AutoencoderTiny:
    """An `AutoencoderTiny` with 8 channels per block (8x downscale, 4 latent channels)."""
    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )


def tiny_kl_module(seed: int = 0, scaling_factor: float = SD1.scaling_factor) -> AutoencoderKL:
    """An `AutoencoderKL` with four 8-channel blocks (8x downscale, 4 latent channels)."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=2,
        latent_channels=4,
        sample_size=32,
        scaling_factor=scaling_factor,
    )


def tiny_taesd(seed: int = 0, space: LatentSpace = SD1) -> TinyAutoencoder:
    """A tiny TAESD behind the codec's model interface."""
    return TinyAutoencoder(tiny_taesd_module(seed), space, f"tiny-taesd-{seed}", CPU, torch.float32)


def tiny_kl(seed: int = 0) -> KLAutoencoder:
    """A tiny full VAE behind the codec's model interface."""
    return KLAutoencoder(tiny_kl_module(seed), SD1, f"tiny-kl-{seed}", CPU, torch.float32)
