"""Thumbnail decoder: latents decoded straight to a thumbnail's size.

A 256-px thumbnail of a 768-px photo keeps a ninth of the full decode's pixels, yet a decode
at full size does all of TAESD's work, most of it in its last two stages, at 1/2 and full
scale. The thumbnail decoder runs TAESD's decoder up to its 1/4-scale features, resizes them
(bilinear) to the thumbnail's size, and runs the decoder's remaining layers there, without the
last 2× upsample, with weights fine-tuned (`codec.train_thumbnail_decoder`) to render what the
full decode looks like resized to that size. Its work follows the thumbnail's pixels: a
256-px thumbnail of a 768×512 photo does 32% of a full decode's multiply-adds, of a
1536×1024 photo 16%. It serves thumbnails at most half the image's width.

A fine-tuned decoder belongs to one decoder: its file records the decoder's fingerprint (at
bfloat16 precision, as a correction's does) and `thumbnail_decoder_for` gives any other decoder
none. Shipped weights live in `codec/weights/thumbnail/`.
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
from .tiling import run_tiled

THUMBNAIL_DECODERS = WEIGHTS / "thumbnail"
FORMAT = "latent-gallery-thumbnail-decoder-2"


class ThumbnailDecoder:
    """A decoder's layers split at its 1/4-scale features, rendering any scale up to 1/2.

    It copies the decoder (channels-last, its own lock); `state` replaces the weights of the
    layers after the split (the decoder's own without it: the untuned thumbnail decoder).
    """

    FEATURE_SCALE = 4
    """How many times smaller than the image the features are."""

    def __init__(
        self, decoder: LatentAutoencoder, state: dict[str, torch.Tensor] | None = None
    ) -> None:
        if decoder.thumbnail_parts() is None:
            raise ModelLoadError(
                f"{decoder.family} decoders have no thumbnail decoder (TAESD's have): tune one "
                "with LATENT_GALLERY_DECODER set to a TAESD"
            )
        self.model = decoder.copy()
        self.features, self.stage = self.model.thumbnail_parts()
        if state is not None:
            try:
                self.stage.load_state_dict({k: v.to(self.model.dtype) for k, v in state.items()})
            except RuntimeError as error:
                raise ModelLoadError(
                    f"the thumbnail decoder's weights do not fit: {error}"
                ) from None
        self.decoder_fingerprint = state_fingerprint(self.model.module, decoder.decoder_prefixes)

    def render(self, features: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
        """Images at `scale` (vertical, horizontal; of the full decode's size) of features,
        with autograd: ⌊`scale` × the full size⌋ pixels or one more, which a caller crops."""
        factors = (self.FEATURE_SCALE * scale[0], self.FEATURE_SCALE * scale[1])
        return self.stage(resize(features, factors))

    def decode(
        self, latents: torch.Tensor, scale: tuple[float, float], tile: int, overlap: int
    ) -> torch.Tensor:
        """Float32 images in [0, 1] on the CPU of scaled latents at `scale` (tuned for scales
        up to 1/2: a thumbnail's height can round a little over); the features computed in
        tiles of `tile` latent pixels for large latents, all on the model's device."""
        grow = self.model.space.downscale / self.FEATURE_SCALE

        def decode(z: torch.Tensor) -> torch.Tensor:
            return self.render(run_tiled(self.features, z, tile, overlap, grow), scale)

        return self.model.run(decode, latents).clamp(0, 1)


def resize(x: torch.Tensor, factors: tuple[float, float], mode: str = "bilinear") -> torch.Tensor:
    """`x` resized by `factors` (vertical, horizontal; antialiased when shrinking): pixel
    centres map exactly, the size rounds down but is never a pixel short of `factors` × `x`'s
    (the factors are nudged up by a millionth)."""
    nudged = tuple(f * (1 + 1e-6) for f in factors)
    return torch.nn.functional.interpolate(
        x, scale_factor=nudged, mode=mode, antialias=min(nudged) < 1,
        recompute_scale_factor=False,
    )  # fmt: skip


def save_decoder(thumbnails: ThumbnailDecoder, path: Path, notes: str = "") -> None:
    """Write a fine-tuned thumbnail decoder's tuned weights as a safetensors file (atomically)."""
    state = thumbnails.stage.state_dict()
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in state.items()}
    model = thumbnails.model
    metadata = {
        "format": FORMAT,
        "family": model.family,
        "decoder": model.rounded_fingerprints[1].hex(),
        "notes": notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(tensors, metadata=metadata))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """A thumbnail decoder file's weights and the decoder fingerprint they were tuned for."""
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
) -> ThumbnailDecoder | None:
    """The thumbnail decoder `LATENT_GALLERY_THUMBNAIL_DECODER` asks for: none (`off`), the
    one in `folder` tuned for the decoder if there is one (`auto`), or the one in a file, which
    must be tuned for it."""
    if setting == "off":
        return None
    wanted = decoder.rounded_fingerprints[1].hex()
    if setting != "auto":
        state, tuned_for = read_weights(Path(setting))
        if tuned_for != wanted:
            raise ModelLoadError(
                f"{setting} was tuned for another decoder ({tuned_for}; {decoder.name} is "
                f"{wanted}): tune one with python -m codec.train_thumbnail_decoder, or set "
                "LATENT_GALLERY_THUMBNAIL_DECODER=auto"
            )
        return ThumbnailDecoder(decoder, state)
    for path in sorted(folder.glob("*.safetensors")):
        state, tuned_for = read_weights(path)
        if tuned_for == wanted:
            return ThumbnailDecoder(decoder, state)
    return None
