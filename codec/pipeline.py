"""`Codec`: images to latent files and back (CompressAI's `compress` and `decompress`), its
models loaded once; `load_codec`, the codec of checked settings."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from .container import LatentFile, unpack
from .correction import LatentCorrection, correction_for
from .decoder_tuning import DECODER_TUNINGS, apply_tuning
from .hardware import detect, fast_dtype
from .images import ImageSource, image_to_tensor, open_image, tensor_to_image
from .measures import psnr
from .methods import QuantizationMethod, get_method
from .models import LatentAutoencoder, load_autoencoder
from .models.loader import decoder_files
from .plan import Plan, SearchModels, measure_plan, search_models
from .rate_control import largest_fitting, smallest_reaching
from .refine import refine, resolve_effort, steps_for
from .settings import CodecSettings, check_settings
from .thumbnail_decoder import THUMBNAIL_DECODERS, ThumbnailDecoder, thumbnail_decoder_for
from .tiling import run_tiled
from .transform import latent_of

DECODE_OVERLAP = 16
"""Latent positions shared by neighbouring decoder tiles."""
VERSION_CHARS = 20
"""Hex digits of `Codec.version`."""
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Encoded:
    """A latent file and, when the encode decoded it anyway, its image (CompressAI's `x_hat`)."""

    data: bytes
    image: Image.Image | None
    """What `Codec.decompress(data)` renders, from the decode the refinement search ended with;
    None when the encode ran no such decode (effort 0) or decoded in another precision than
    renders do (`render_decoder`), whose pixels could differ, or on a proxy (whose images are
    not the decoder's)."""


def load_codec(
    settings: CodecSettings,
    *,
    encoder: LatentAutoencoder | None = None,
    decoder: LatentAutoencoder | None = None,
    plan: Plan | None = None,
) -> Codec:
    """A codec of `settings`, checked first (`SettingsError` naming the variable at fault);
    its models load on first use or `load()`, except those given (see `Codec`)."""
    check_settings(settings)
    return Codec(settings, encoder=encoder, decoder=decoder, plan=plan)


class Codec:
    """Encode images to latent files and decode them, with the models loaded once.

    Models load lazily on first use (or with `load()`), from `settings` or as given; the
    same spec for encoder and decoder loads one model (a given one serves both). `plan` (what
    `auto` effort means and the search precision) is measured on first need unless given.
    Safe to share between threads. `load_codec` checks the settings first.
    """

    def __init__(
        self,
        settings: CodecSettings | None = None,
        *,
        encoder: LatentAutoencoder | None = None,
        decoder: LatentAutoencoder | None = None,
        plan: Plan | None = None,
    ) -> None:
        self._settings = settings or CodecSettings()
        if self._settings.encoder == self._settings.decoder:  # one model serves both
            encoder, decoder = encoder or decoder, decoder or encoder
        self._given_decoder = decoder
        self._plan = plan
        self._version: str | None = None
        self._lock = threading.RLock()
        self._parts: dict[str, object] = {}  # the given and loaded parts by name (`_part`)
        for name, model in (("encoder", encoder), ("decoder", decoder)):
            if model is not None:
                self._parts[name] = model

    @property
    def settings(self) -> CodecSettings:
        """What the codec loads and how it runs."""
        return self._settings

    @property
    def encoder(self) -> LatentAutoencoder:
        """The encoder model, loaded on first use."""
        return self._part("encoder", lambda: self._load("encoder"))

    @property
    def decoder(self) -> LatentAutoencoder:
        """The decoder model, loaded on first use."""
        return self._part("decoder", lambda: self._load("decoder"))

    @property
    def render_decoder(self) -> LatentAutoencoder:
        """The decoder that full-scale decodes run on: a bfloat16 twin of a float32 decoder on
        a CPU with native bfloat16 kernels (`hardware.fast_dtype`; twice as fast), unless
        `settings.render_precision` is `model`; else the decoder itself."""
        return self._part("render_decoder", self._render_twin)

    @property
    def thumbnail_decoder(self) -> ThumbnailDecoder | None:
        """The decoder's thumbnail decoder (`codec.thumbnail_decoder`) that
        `settings.thumbnail_decoder` names, if any: it decodes straight to a thumbnail's size."""
        return self._part(
            "thumbnail_decoder",
            lambda: thumbnail_decoder_for(self.settings.thumbnail_decoder, self.decoder),
        )

    @property
    def correction(self) -> LatentCorrection | None:
        """The learned correction `settings.correction` names for these models, if any."""
        return self._part(
            "correction",
            lambda: correction_for(self.settings.correction, self.encoder, self.decoder),
        )

    @property
    def plan(self) -> Plan:
        """How this machine encodes (search precision, what `auto` effort means): measured once
        on the loaded models (`codec.plan`; a few seconds on a 2-core CPU), and logged."""
        if self._plan is None:
            self._plan = self._searches().plan
        return self._plan

    @property
    def measured_plan(self) -> Plan | None:
        """The plan if it was measured (or given) already; measures nothing."""
        return self._plan

    @property
    def version(self) -> str:
        """Identifies what a render looks like, for URLs and ETags, without loading a model:
        a short SHA-256 over the decoder's weight files (`models.loader.decoder_files`; its
        spec where a hub id is not downloaded yet), or a given decoder's fingerprint, and the
        decoder tuning and thumbnail decoder files their settings choose among."""
        if self._version is None:
            self._version = self._weights_digest()
        return self._version

    def load(self) -> None:
        """Load the models now: the encoder, the decoder, its thumbnail decoder and the
        correction (raises `ModelLoadError` naming the setting to fix)."""
        for name in ("encoder", "decoder", "thumbnail_decoder", "correction"):
            getattr(self, name)

    def compress(
        self,
        image: ImageSource | Image.Image,
        *,
        quality: int | None = None,
        target_bytes: int | None = None,
        target_psnr: float | None = None,
        effort: int | str | None = None,
        method: str | None = None,
        latent: np.ndarray | None = None,
    ) -> Encoded:
        """A latent file of an image, and its reconstruction when the encode decoded it.

        `image` is a PIL image, or bytes, a path or a file object decoded under
        `settings.max_pixels` (`images.open_image`). Its latent (`transform.latent_of`, or
        `latent`, that of `image` already) is refined for this codec's decoder at `effort`
        0..9 or `auto` (default `settings.effort`, see `refine.resolve_effort`; `auto`
        searches on the plan's `auto` model, maybe a proxy), then coded by `method` (default
        `settings.method`). At most one of `quality` (1..100, default the method's),
        `target_bytes` (the largest file that fits) or `target_psnr` (the smallest file whose
        decoded PSNR reaches it) sets the rate.
        """
        _check_rate(quality, target_bytes, target_psnr)
        if not isinstance(image, Image.Image):
            image = open_image(image, self.settings.max_pixels)
        image = image.convert("RGB")
        if latent is None:
            latent = latent_of(self, image)
        size = (image.width, image.height)
        requested = self.settings.effort if effort is None else effort
        effort = resolve_effort(requested, size, self.settings.tile, lambda: self.plan.auto_effort)
        method = get_method(method or self.settings.method)
        tuned_for = self.decoder.family if self.correction is not None else None
        decoded: dict[bytes, Image.Image] = {}
        if effort:
            searches = self._searches()
            search = searches.auto if requested == "auto" else searches.decoder
            exact = search.dtype == self.render_decoder.dtype and search.pixel_scale == 1
            pixels = image_to_tensor(image)

        def file_at(q: int) -> bytes:
            if not effort:
                return self._pack(latent, size, method, q, tuned_for)
            refined = refine(pixels, latent[None], search, method, q, steps_for(effort))
            data = self._pack(refined.latents[0], size, method, q, self.decoder.family)
            if exact:
                decoded[data] = tensor_to_image(refined.images[0])
            return data

        def decoded_psnr(data: bytes) -> float:
            decoded[data] = self.decompress(data)
            return psnr(image, decoded[data])

        if target_psnr is not None:
            data = smallest_reaching(file_at, decoded_psnr, target_psnr)
        elif target_bytes is not None:
            data = largest_fitting(file_at, target_bytes)
        else:
            data = file_at(quality or method.default_quality)
        return Encoded(data, decoded.get(data))

    def decompress(self, data: bytes) -> Image.Image:
        """The image of a latent file (`LatentFileError` if it is bad,
        `LatentSpaceMismatchError` if the decoder speaks another latent space)."""
        header, latent = unpack(data, self.decoder.space)
        pixels = self.decode_latents(torch.from_numpy(latent)[None])
        return tensor_to_image(pixels[0, :, : header.height, : header.width])

    def decode_latents(
        self, latents: torch.Tensor, scale: tuple[float, float] | None = None
    ) -> torch.Tensor:
        """Images `(B, 3, 8H, 8W)` in [0, 1] of scaled latents `(B, 4, H, W)`, tiled if large;
        with `scale` (vertical, horizontal; up to about 1/2), the thumbnail decoder's images
        at that scale of the full size, at least ⌊`scale` × 8H⌋ by ⌊`scale` × 8W⌋ pixels
        (`ValueError` if there is none)."""
        tile = self.settings.tile // self.decoder.space.downscale
        if scale is None:
            return run_tiled(
                self.render_decoder.decode,
                latents,
                tile,
                DECODE_OVERLAP,
                self.decoder.space.downscale,
            )
        if self.thumbnail_decoder is None:
            raise ValueError(
                "no thumbnail decoder is loaded: set LATENT_GALLERY_THUMBNAIL_DECODER=auto with "
                "a TAESD decoder, or decode at full scale"
            )
        return self.thumbnail_decoder.decode(latents, scale, tile, DECODE_OVERLAP)

    def _part(self, name: str, make: Callable[[], T]) -> T:
        """The part `name`, made by `make` on first use, once (under the lock)."""
        if name not in self._parts:
            with self._lock:
                if name not in self._parts:
                    self._parts[name] = make()
        return self._parts[name]

    def _load(self, role: str) -> LatentAutoencoder:
        """The `encoder` or `decoder` model from its setting (the other one where both
        settings name one model and it is loaded); a decoder gets the tuning
        `settings.decoder_tuning` asks for."""
        s = self.settings
        other = "decoder" if role == "encoder" else "encoder"
        if s.encoder == s.decoder and other in self._parts:
            model = self._parts[other]
        else:
            model = load_autoencoder(getattr(s, role), s.device, f"LATENT_GALLERY_{role.upper()}")
        if role == "decoder" and apply_tuning(s.decoder_tuning, model):
            log.info("decoder tuned for these files (LATENT_GALLERY_DECODER_TUNING)")
        return model

    def _render_twin(self) -> LatentAutoencoder:
        """The decoder's twin in the precision renders decode in (`render_decoder`)."""
        decoder = self.decoder
        dtype = decoder.dtype
        if self.settings.render_precision == "auto":
            dtype = fast_dtype(detect(decoder.device), dtype)
        render = decoder.twin(dtype)
        log.info("renders decode on %s", render.describe())
        return render

    def _searches(self) -> SearchModels:
        """The models refinement searches on, of the given plan or of one measured now."""

        def make() -> SearchModels:
            if self._plan is not None:
                return search_models(self._plan, self.decoder)
            return measure_plan(self.encoder, self.decoder)

        return self._part("searches", make)

    def _pack(
        self,
        latent: np.ndarray,
        size: tuple[int, int],
        method: QuantizationMethod,
        quality: int,
        tuned_for: str | None,
    ) -> bytes:
        """The latent file of a float latent of an image of `size` (width, height), coded by
        `method` at `quality`; `tuned_for` is the decoder family the latent was moved towards."""
        latent = np.ascontiguousarray(latent, dtype=np.float32)
        compressed = method.compress(latent, quality)
        return LatentFile(
            space=self.encoder.space,
            method_id=method.id,
            encoder_family=self.encoder.family,
            width=size[0],
            height=size[1],
            latent_shape=latent.shape,
            encoder_fingerprint=self.encoder.encoder_fingerprint,
            params=compressed.params,
            payload=compressed.payload,
            tuned_for=tuned_for,
        ).to_bytes()

    def _weights_digest(self) -> str:
        """`version`: hashes of the files (or fingerprint) that make a render."""
        digest = hashlib.sha256()
        if self._given_decoder is not None:
            digest.update(self._given_decoder.decoder_fingerprint)
        else:
            files = decoder_files(self.settings.decoder)
            for path in files:
                digest.update(_file_digest(path))
            if not files:
                digest.update(self.settings.decoder.encode())
        for path in (
            *DECODER_TUNINGS.candidates(self.settings.decoder_tuning),
            *THUMBNAIL_DECODERS.candidates(self.settings.thumbnail_decoder),
        ):
            digest.update(_file_digest(path))
        return digest.hexdigest()[:VERSION_CHARS]


def _file_digest(path: Path) -> bytes:
    """SHA-256 of a file's bytes."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


def _check_rate(quality: int | None, target_bytes: int | None, target_psnr: float | None) -> None:
    """A `ValueError` unless at most one way of setting the rate is given, quality in 1..100."""
    if sum(x is not None for x in (quality, target_bytes, target_psnr)) > 1:
        raise ValueError("give at most one of quality, target_bytes, target_psnr")
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
