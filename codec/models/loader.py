"""Resolve a model spec (hub id, folder or file) to a loaded `LatentAutoencoder`, or to the
files its weights load from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError

from ..device import preferred_dtype, resolve_device
from ..errors import ModelLoadError, SettingsError
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
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""The shape of a Hugging Face hub id: `owner/name`."""


def check_spec(spec: str, setting: str) -> None:
    """Raise `SettingsError` (naming `setting`) unless `spec` is an alias, an existing local
    file or folder, or shaped like a hub id; what a path holds is checked when it loads."""
    if spec in ALIASES or (spec and Path(spec).exists()):
        return
    if spec.startswith((".", "/", "~")):
        raise SettingsError(f"{setting}={spec!r}: expected an existing file or folder")
    if not HUB_ID.fullmatch(spec):
        raise SettingsError(
            f"{setting}={spec!r}: expected a local file or folder, a hub id (owner/name) or "
            f"one of {', '.join(ALIASES)}"
        )


def decoder_files(spec: str) -> list[Path]:
    """The files the decoder `spec` names loads its weights from, found without loading it: the
    file itself, a TAESD pair's decoder file, or a diffusers folder's files (a hub id's in the
    local Hugging Face cache; none while it is not downloaded)."""
    spec = ALIASES.get(spec, spec)
    path = Path(spec)
    if path.is_file():
        return [path]
    if not path.is_dir():
        try:
            config = try_to_load_from_cache(spec, "config.json")
        except ValueError:  # not a hub id
            return []
        if not isinstance(config, str):
            return []
        path = Path(config).parent
    pair = comfy_pair(path)
    if pair is not None:
        return [pair[1]]
    return sorted(file for file in path.iterdir() if file.is_file())


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
