"""Thumbnail decoder: latents decoded straight to a thumbnail's size.

A 256-px thumbnail of a 768-px photo keeps a ninth of the full decode's pixels, yet a decode
at full size does all of TAESD's work, most of it in its last two stages, at 1/2 and full
scale. The thumbnail decoder runs TAESD's decoder up to its 1/4-scale features, resizes them
(bilinear) to the thumbnail's size, and runs the decoder's remaining layers there, without the
last 2× upsample, with weights fine-tuned (`codec.training.thumbnail_decoder`) to render what the
full decode looks like resized to that size. Its work follows the thumbnail's pixels: a
256-px thumbnail of a 768×512 photo does 32% of a full decode's multiply-adds, of a
1536×1024 photo 16%. It serves thumbnails at most half the image's width.

A fine-tuned decoder belongs to one decoder: its file (`codec.learned_weights`) records the
decoder's fingerprint and `thumbnail_decoder_for` gives any other decoder none. Shipped weights
live in `codec/weights/thumbnail/`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ModelLoadError
from .learned_weights import WEIGHTS, LearnedWeights, made_for
from .models import LatentAutoencoder
from .models.base import state_fingerprint
from .models.taesd import thumbnail_parts
from .tiling import run_tiled

THUMBNAIL_DECODERS = LearnedWeights(
    format="latent-gallery-thumbnail-decoder-2",
    name="thumbnail decoder",
    command="python -m codec.training.thumbnail_decoder",
    setting="LATENT_GALLERY_THUMBNAIL_DECODER",
    folder=WEIGHTS / "thumbnail",
    binding=("decoder",),
    build=lambda state, _: state,
)
"""A file holds the tuned layers' weights (`ThumbnailDecoder`'s `state`)."""


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
        if thumbnail_parts(decoder) is None:
            raise ModelLoadError(
                f"{decoder.family} decoders have no thumbnail decoder (TAESD's have): tune one "
                "with LATENT_GALLERY_DECODER set to a TAESD"
            )
        self.model = decoder.copy()
        self.features, self.stage = thumbnail_parts(self.model)
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
    model = thumbnails.model
    metadata = {"family": model.family, **made_for(decoder=model), "notes": notes}
    THUMBNAIL_DECODERS.save(path, thumbnails.stage.state_dict(), metadata)


def thumbnail_decoder_for(
    setting: str, decoder: LatentAutoencoder, folder: Path = THUMBNAIL_DECODERS.folder
) -> ThumbnailDecoder | None:
    """The thumbnail decoder `LATENT_GALLERY_THUMBNAIL_DECODER` asks for: none (`off`), the
    one in `folder` tuned for the decoder if there is one (`auto`), or the one in a file, which
    must be tuned for it."""
    state = THUMBNAIL_DECODERS.resolve(setting, made_for(decoder=decoder), folder)
    return None if state is None else ThumbnailDecoder(decoder, state)
