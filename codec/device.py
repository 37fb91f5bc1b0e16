"""Pick the torch device and dtype the models run on."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; any other value is passed to torch."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"LATENT_GALLERY_DEVICE={name!r} is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("LATENT_GALLERY_DEVICE asks for cuda but torch sees no CUDA device")
    return device


def preferred_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere (CPU half precision is slow and inexact)."""
    return torch.float16 if device.type == "cuda" else torch.float32
