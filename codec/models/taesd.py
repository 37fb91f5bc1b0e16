"""TAESD (`diffusers.AutoencoderTiny`): hub id, diffusers folder, or ComfyUI/A1111 file pair.

Only TAESD has a half-resolution search proxy and a thumbnail split: `search_proxy` and
`thumbnail_parts` ask any model for them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from safetensors.torch import load_file

from ..errors import ModelLoadError
from ..spaces import SD1, SDXL, LatentSpace
from .base import LatentAutoencoder

DEFAULT_HUB_ID = "madebyollin/taesd"
ThumbnailParts = tuple[Callable[[torch.Tensor], torch.Tensor], torch.nn.Sequential]
"""Latents to the decoder's 1/4-scale features, and the layers that render them resized."""


class TinyAutoencoder(LatentAutoencoder):
    """TAESD: its latents are already the scaled SD latents."""

    family = "taesd"
    channels_last = True
    """A 768×512 decode: 2.4 s against 3.3 s contiguous on the 2-core AVX2 EPYC (float32)."""

    def encode_differentiable(self, images: torch.Tensor) -> torch.Tensor:
        return self.module.encoder(images * 2 - 1)

    def decode_differentiable(self, latents: torch.Tensor) -> torch.Tensor:
        if self.pixel_scale == 2:
            return self.last_stage()(self.half_scale_features(latents))
        return (self.module.decoder(latents) + 1) / 2

    def proxy(self) -> TinyAutoencoder:
        """A channels-last copy that decodes at half resolution (`pixel_scale` 2): the
        decoder's last 2× upsample is skipped and its last stage runs on the half-scale
        features, about 0.4× of a decoder pass (forward and backward) on the 2-core AVX2 EPYC."""
        proxy = self.copy()
        proxy.pixel_scale = 2
        return proxy

    def last_stage(self) -> torch.nn.Sequential:
        """The decoder's layers after its last 2× upsample (shared, not copied), which a proxy
        runs at half scale."""
        decoder = self.module.decoder
        return decoder.layers[_upsamples(decoder)[-1] + 1 :]

    def half_scale_features(self, latents: torch.Tensor) -> torch.Tensor:
        """What the decoder's layers before its last upsample make of latents: the last
        stage's input, at half scale (with autograd)."""
        decoder = self.module.decoder
        return decoder.layers[: _upsamples(decoder)[-1]](torch.tanh(latents / 3) * 3)

    def thumbnail_parts(self) -> ThumbnailParts:
        """The decoder split for `codec.thumbnail_decoder` (its layers, shared, not copied):
        latents to features at 1/4 scale, and the rest without the last 2× upsample, which
        renders those features resized to a thumbnail's size."""
        layers = self.module.decoder.layers
        before_last, last = _upsamples(self.module.decoder)[-2:]

        def features(latents: torch.Tensor) -> torch.Tensor:
            return layers[:before_last](torch.tanh(latents / 3) * 3)

        return features, torch.nn.Sequential(*layers[before_last + 1 : last], *layers[last + 1 :])


def search_proxy(model: LatentAutoencoder) -> LatentAutoencoder | None:
    """A search model about half as costly as `model`'s decoder whose images approximate the
    decoder's at its `pixel_scale` (`TinyAutoencoder.proxy`); None for other families."""
    return model.proxy() if isinstance(model, TinyAutoencoder) else None


def thumbnail_parts(model: LatentAutoencoder) -> ThumbnailParts | None:
    """`model`'s decoder split for `codec.thumbnail_decoder` (`TinyAutoencoder.thumbnail_parts`);
    None for other families."""
    return model.thumbnail_parts() if isinstance(model, TinyAutoencoder) else None


def _upsamples(decoder: torch.nn.Module) -> list[int]:
    """The indices of the decoder's 2× upsamples in its layers."""
    return [i for i, layer in enumerate(decoder.layers) if isinstance(layer, torch.nn.Upsample)]


def space_from_name(name: str) -> LatentSpace:
    """TAESD checkpoints carry no space in their config: `taesdxl` names mean SDXL."""
    lowered = name.lower()
    if "taesd3" in lowered or "taef1" in lowered:
        raise ModelLoadError(f"{name}: SD3/FLUX tiny autoencoders (16 channels) are not supported")
    return SDXL if "taesdxl" in lowered else SD1


def comfy_pair(folder: Path) -> tuple[Path, Path] | None:
    """The `<prefix>_encoder.safetensors` / `<prefix>_decoder.safetensors` pair in a folder."""
    for prefix in ("taesdxl", "taesd"):
        pair = (folder / f"{prefix}_encoder.safetensors", folder / f"{prefix}_decoder.safetensors")
        if pair[0].is_file() and pair[1].is_file():
            return pair
    return None


def load_comfy_pair(encoder_file: Path, decoder_file: Path) -> AutoencoderTiny:
    """Build an `AutoencoderTiny` from the bare `nn.Sequential` keys of the ComfyUI layout.

    Encoder key `i.…` is `encoder.layers.i.…`; decoder key `i.…` is `decoder.layers.(i-1).…`
    (the original decoder starts with a weightless Clamp that diffusers does in `forward`).
    """
    model = AutoencoderTiny()
    state = {}
    for key, tensor in load_file(encoder_file).items():
        state[f"encoder.layers.{key}"] = tensor.float()
    for key, tensor in load_file(decoder_file).items():
        index, rest = key.split(".", 1)
        state[f"decoder.layers.{int(index) - 1}.{rest}"] = tensor.float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"{encoder_file.parent}: not a TAESD pair "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model


def load_taesd(spec: str, device: torch.device, dtype: torch.dtype) -> TinyAutoencoder:
    """Load TAESD from a ComfyUI pair folder, a diffusers folder, or a hub id."""
    path = Path(spec)
    pair = comfy_pair(path) if path.is_dir() else None
    if pair is not None:
        module = load_comfy_pair(*pair)
        space = space_from_name(pair[0].name)
    else:
        module = AutoencoderTiny.from_pretrained(spec, torch_dtype=torch.float32)
        space = space_from_name(spec)
    return TinyAutoencoder(module, space, spec, device, dtype)
