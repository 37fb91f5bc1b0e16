"""Resolve a model spec (hub id, folder or file) to a loaded `LatentAutoencoder`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..device import preferred_dtype, resolve_device
from ..errors import ModelLoadError
from .autoencoder_kl import DEFAULT_HUB_ID as KL_HUB_ID
from .autoencoder_kl import SINGLE_FILE_SUFFIXES, load_kl
from .base import LatentAutoencoder
from .taesd import DEFAULT_HUB_ID as TAESD_HUB_ID
from .taesd import comfy_pair, load_taesd

ALIASES = {
    "taesd": TAESD_HUB_ID,
    "taesdxl": "madebyollin/taesdxl",
    "sd-vae": KL_HUB_ID,
    "sdxl-vae": "madebyollin/sdxl-vae-fp16-fix",
}
EXPECTED_FILES = (
    "a diffusers folder (config.json + diffusion_pytorch_model.safetensors), "
    "a folder with taesd_encoder.safetensors + taesd_decoder.safetensors, "
    "or a single AutoencoderKL .safetensors/.ckpt file"
)


def family_of(spec: str) -> str:
    """`taesd` or `kl`, from the files a local spec points at or the words of a hub id."""
    path = Path(spec)
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(f"{spec}: expected {EXPECTED_FILES}")
        return "kl"
    if path.is_dir():
        if comfy_pair(path) is not None:
            return "taesd"
        config = path / "config.json"
        if not config.is_file():
            raise ModelLoadError(f"{spec}: no model here; expected {EXPECTED_FILES}")
        class_name = json.loads(config.read_text()).get("_class_name", "")
        if class_name not in ("AutoencoderTiny", "AutoencoderKL"):
            raise ModelLoadError(f"{config}: {class_name or 'no _class_name'} is not an SD VAE")
        return "taesd" if class_name == "AutoencoderTiny" else "kl"
    if spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"{spec}: no such file or folder; expected {EXPECTED_FILES}")
    return "taesd" if "taesd" in spec.lower() else "kl"


def load_autoencoder(
    spec: str, device: str | torch.device = "auto", setting: str = "LATENT_GALLERY_DECODER"
) -> LatentAutoencoder:
    """Load the autoencoder named by `spec`; `setting` is the variable named in errors.

    `spec` is a hub id, a local folder or file, or an alias: `taesd`, `taesdxl`, `sd-vae`
    (the full SD 1.x VAE, `stabilityai/sd-vae-ft-mse`) or `sdxl-vae` (the fp16-safe SDXL VAE).
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = preferred_dtype(device)
    spec = ALIASES.get(spec, spec)
    try:
        family = family_of(spec)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc}. Set {setting} to a local path") from None
    try:
        if family == "taesd":
            return load_taesd(spec, device, dtype)
        return load_kl(spec, device, dtype)
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(
            f"cannot load {family} model {spec!r} ({first_line}). Set {setting} to a local path: "
            f"{EXPECTED_FILES} (defaults: {TAESD_HUB_ID}, {KL_HUB_ID} need the Hugging Face hub)"
        ) from exc
