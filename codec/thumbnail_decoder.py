"""Thumbnail decoder: images at half scale for about half of a full decode's work.

A 256-px thumbnail of a 768-px photo keeps a ninth of the full decode's pixels, yet TAESD's
decoder spends more than half its multiply-adds on its last stage, at full scale. The
thumbnail decoder is the decoder's half-resolution proxy (its layers up to the last 2×
upsample, then its last stage run at half scale: 59% of the multiply-adds) with that last
stage fine-tuned (`codec.train_thumbnail_decoder`) to render what the full decode looks like
box-downsampled 2×. Thumbnails up to half the image's width are resized from its images.

A fine-tuned stage belongs to one decoder: its file records the decoder's fingerprint (at
bfloat16 precision, as a correction's does) and `thumbnail_decoder_for` gives any other decoder
none. Shipped stages live in `codec/weights/thumbnail/`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .atomic import atomic_write
from .correction import WEIGHTS
from .errors import ModelLoadError
from .models import LatentAutoencoder
from .models.base import state_fingerprint

THUMBNAIL_DECODERS = WEIGHTS / "thumbnail"
FORMAT = "latent-gallery-thumbnail-decoder-1"


def save_stage(
    stage: torch.nn.Module, path: Path, decoder: LatentAutoencoder, notes: str = ""
) -> None:
    """Write a fine-tuned last stage of `decoder` as a safetensors file (atomically)."""
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in stage.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "family": decoder.family,
        "decoder": decoder.rounded_fingerprints[1].hex(),
        "notes": notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(tensors, metadata=metadata))


def read_stage(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """A stage file's weights and the decoder fingerprint they were tuned for."""
    try:
        with safe_open(str(path), "pt") as file:
            meta = file.metadata() or {}
            state = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
        if meta.get("format") != FORMAT:
            raise ValueError("no thumbnail decoder metadata")
        return state, meta["decoder"]
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        raise ModelLoadError(
            f"{path}: not a thumbnail decoder file ({error}); write one with "
            "python -m codec.train_thumbnail_decoder, or set LATENT_GALLERY_THUMBNAIL_DECODER="
            "auto or off"
        ) from None


def thumbnail_decoder_for(
    setting: str, decoder: LatentAutoencoder, folder: Path = THUMBNAIL_DECODERS
) -> LatentAutoencoder | None:
    """The thumbnail decoder `LATENT_GALLERY_THUMBNAIL_DECODER` asks for: none (`off`), the
    decoder's proxy with the stage in `folder` tuned for it if there is one (`auto`), or with
    the stage in a file, which must be tuned for it."""
    if setting == "off":
        return None
    wanted = decoder.rounded_fingerprints[1].hex()
    if setting != "auto":
        state, tuned_for = read_stage(Path(setting))
        if tuned_for != wanted:
            raise ModelLoadError(
                f"{setting} was tuned for another decoder ({tuned_for}; {decoder.name} is "
                f"{wanted}): tune one with python -m codec.train_thumbnail_decoder, or set "
                "LATENT_GALLERY_THUMBNAIL_DECODER=auto"
            )
        return _with_stage(decoder, state)
    for path in sorted(folder.glob("*.safetensors")):
        state, tuned_for = read_stage(path)
        if tuned_for == wanted:
            return _with_stage(decoder, state)
    return None


def _with_stage(decoder: LatentAutoencoder, state: dict[str, torch.Tensor]) -> LatentAutoencoder:
    """The decoder's proxy with its last stage's weights replaced by `state`."""
    proxy = decoder.proxy()
    if proxy is None:
        raise ModelLoadError(f"{decoder.family} decoders have no half-scale proxy to tune")
    stage = proxy.last_stage()
    try:
        stage.load_state_dict({k: v.to(proxy.dtype) for k, v in state.items()})
    except RuntimeError as error:
        raise ModelLoadError(f"the thumbnail decoder's weights do not fit: {error}") from None
    proxy.decoder_fingerprint = state_fingerprint(proxy.module, proxy.decoder_prefixes)
    return proxy
