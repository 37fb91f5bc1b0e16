"""`Codec`: image -> latent -> quantized latent file, and back; the models loaded once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .container import LatentFile
from .correction import LatentCorrection, correction_for
from .errors import LatentSpaceMismatchError
from .hardware import Plan, choose_plan, detect, fast_dtype, measure, search_dtypes
from .images import ImageSource, image_to_tensor, open_image, pad_to_multiple, tensor_to_image
from .methods import dequantize, get_method
from .models import LatentAutoencoder, load_autoencoder
from .rate_control import largest_fitting, psnr, smallest_reaching
from .refine import refine, resolve_effort, steps_for
from .settings import CodecSettings
from .thumbnail_decoder import ThumbnailDecoder, thumbnail_decoder_for
from .tiling import run_tiled

ENCODE_OVERLAP = 64  # pixels shared by neighbouring encoder tiles
DECODE_OVERLAP = 16  # latent positions shared by neighbouring decoder tiles
log = logging.getLogger(__name__)
_UNRESOLVED = object()  # the correction or thumbnail decoder before its models are loaded


@dataclass(frozen=True)
class Encoded:
    """A latent file and, when the encode decoded it anyway, its image (CompressAI's `x_hat`)."""

    data: bytes
    image: Image.Image | None
    """What `Codec.decode(data)` renders, from the decode the refinement search ended with;
    None when the encode ran no such decode (effort 0) or decoded in another precision than
    renders do (`render_decoder`), whose pixels could differ, or on a proxy (whose images are
    not the decoder's)."""


class Codec:
    """Encode images to latent files and decode them, with the models loaded once.

    Models load lazily on first use (or with `load()`), from `settings` or as given; the
    same spec for encoder and decoder loads one model. `plan` (what `auto` effort means and
    the search precision) is measured on first need unless given. Safe to share between
    threads.
    """

    def __init__(
        self,
        settings: CodecSettings | None = None,
        *,
        encoder: LatentAutoencoder | None = None,
        decoder: LatentAutoencoder | None = None,
        plan: Plan | None = None,
    ) -> None:
        self.settings = settings or CodecSettings()
        if self.settings.tile % 64:
            raise ValueError(f"tile must be a multiple of 64 pixels, got {self.settings.tile}")
        get_method(self.settings.method)
        for name, value in (
            ("CORRECTION", self.settings.correction),
            ("THUMBNAIL_DECODER", self.settings.thumbnail_decoder),
        ):
            if value not in ("auto", "off") and not Path(value).is_file():
                raise ValueError(
                    f"LATENT_GALLERY_{name} must be auto, off or a file's path, got {value!r}"
                )
        self._encoder, self._decoder = encoder, decoder
        self._correction: LatentCorrection | object | None = _UNRESOLVED
        self._thumbnail_decoder: ThumbnailDecoder | object | None = _UNRESOLVED
        self._load_lock = threading.Lock()
        self._plan_lock = threading.Lock()
        self._plan = plan
        self._search: LatentAutoencoder | None = None
        self._proxy: LatentAutoencoder | None = None
        self._render: LatentAutoencoder | None = None

    @classmethod
    def from_env(cls) -> Codec:
        """A codec configured by the `LATENT_GALLERY_*` environment variables."""
        return cls(CodecSettings.from_env())

    @property
    def encoder(self) -> LatentAutoencoder:
        """The encoder model, loaded on first use."""
        if self._encoder is None:
            self.load(decoder=False)
        return self._encoder

    @property
    def decoder(self) -> LatentAutoencoder:
        """The decoder model, loaded on first use."""
        if self._decoder is None:
            self.load(encoder=False)
        return self._decoder

    @property
    def render_decoder(self) -> LatentAutoencoder:
        """The decoder that full-scale decodes run on: a bfloat16 twin of a float32 decoder on
        a CPU with native bfloat16 kernels (`hardware.fast_dtype`; twice as fast), unless
        `settings.render_precision` is `model`; else the decoder itself."""
        with self._plan_lock:
            if self._render is None:
                decoder = self.decoder
                dtype = decoder.dtype
                if self.settings.render_precision == "auto":
                    dtype = fast_dtype(detect(decoder.device), dtype)
                self._render = decoder.twin(dtype)
                log.info("renders decode on %s", self._render.describe())
            return self._render

    @property
    def correction(self) -> LatentCorrection | None:
        """The learned correction `settings.correction` names for these models, if any."""
        if self._correction is _UNRESOLVED:
            self.load()
        return self._correction

    @property
    def thumbnail_decoder(self) -> ThumbnailDecoder | None:
        """The decoder's thumbnail decoder (`codec.thumbnail_decoder`) that
        `settings.thumbnail_decoder` names, if any: it decodes straight to a thumbnail's size."""
        if self._thumbnail_decoder is _UNRESOLVED:
            self.load(encoder=False)
        return self._thumbnail_decoder

    def load(self, encoder: bool = True, decoder: bool = True) -> None:
        """Load the models now: with the decoder its thumbnail decoder, with both the correction
        (raises `ModelLoadError` naming the setting to fix)."""
        with self._load_lock:
            s = self.settings
            if encoder and self._encoder is None:
                if self._decoder is not None and s.encoder == s.decoder:
                    self._encoder = self._decoder
                else:
                    self._encoder = load_autoencoder(s.encoder, s.device, "LATENT_GALLERY_ENCODER")
            if decoder and self._decoder is None:
                if self._encoder is not None and s.encoder == s.decoder:
                    self._decoder = self._encoder
                else:
                    self._decoder = load_autoencoder(s.decoder, s.device, "LATENT_GALLERY_DECODER")
            if decoder and self._thumbnail_decoder is _UNRESOLVED:
                self._thumbnail_decoder = thumbnail_decoder_for(s.thumbnail_decoder, self._decoder)
            loaded = self._encoder is not None and self._decoder is not None
            if loaded and self._correction is _UNRESOLVED:
                self._correction = correction_for(s.correction, self._encoder, self._decoder)

    def open(self, source: ImageSource, max_side: int | None = None) -> Image.Image:
        """Decode an untrusted image to RGB under this codec's pixel limit, scaled down to
        `max_side` pixels on its longest side if it is longer."""
        return open_image(source, self.settings.max_pixels, max_side)

    def latent_of(self, image: Image.Image) -> np.ndarray:
        """The float32 scaled latent `(4, ceil(H/8), ceil(W/8))` of an RGB image."""
        scale = self.encoder.space.downscale
        pixels = pad_to_multiple(image_to_tensor(image), scale)
        latent = run_tiled(
            self.encoder.encode, pixels, self.settings.tile, ENCODE_OVERLAP, 1 / scale, scale
        )
        return latent[0].numpy()

    def correct(self, latent: np.ndarray) -> np.ndarray:
        """`latent` moved by the learned correction; unchanged where none applies."""
        return latent if self.correction is None else self.correction.apply_to(latent)

    @property
    def corrected_for(self) -> str | None:
        """The decoder family a `correct`ed latent suits (None: no correction applies)."""
        return self.decoder.family if self.correction is not None else None

    @property
    def plan(self) -> Plan:
        """How this machine encodes (search precision, what `auto` effort means): measured once
        on the loaded models (`codec.hardware`; a few seconds on a 2-core CPU), and logged."""
        with self._plan_lock:
            if self._plan is None:
                machine = detect(self.decoder.device)
                twins = {
                    str(dtype).removeprefix("torch."): self.decoder.twin(dtype)
                    for dtype in search_dtypes(machine, self.decoder.dtype)
                }
                proxies = {n: m.proxy() for n, m in twins.items()}
                proxies = {n: m for n, m in proxies.items() if m is not None}
                costs = measure(
                    self.encoder.encode,
                    {n: _searcher(m) for n, m in twins.items()},
                    {n: _searcher(m) for n, m in proxies.items()},
                )
                self._plan = choose_plan(machine, costs)
                self._search = twins[self._plan.search_dtype]
                self._proxy = proxies.get(self._plan.search_dtype)
                log.info("encode plan: %s", self._plan.describe())
            return self._plan

    @property
    def measured_plan(self) -> Plan | None:
        """The plan if it was measured (or given) already; measures nothing."""
        return self._plan

    @property
    def search_decoder(self) -> LatentAutoencoder:
        """The decoder in the precision refinement searches run in (`plan.search_dtype`)."""
        plan = self.plan
        with self._plan_lock:
            if self._search is None:
                self._search = self.decoder.twin(getattr(torch, plan.search_dtype))
            return self._search

    @property
    def auto_search(self) -> LatentAutoencoder:
        """The model `auto` effort searches on: the search decoder's proxy where the plan says
        so (`plan.search`), else the search decoder."""
        if self.plan.search != "proxy":
            return self.search_decoder
        search = self.search_decoder
        with self._plan_lock:
            if self._proxy is None:
                self._proxy = search.proxy()
            return self._proxy

    def encode(self, source: ImageSource | Image.Image, **options) -> bytes:
        """A latent file of an image (bytes, path, file object or PIL image); `compress`'s
        options."""
        return self.compress(source, **options).data

    def compress(
        self,
        source: ImageSource | Image.Image,
        *,
        method: str | None = None,
        quality: int | None = None,
        target_bytes: int | None = None,
        target_psnr: float | None = None,
        effort: int | str | None = None,
    ) -> Encoded:
        """A latent file of an image, and its reconstruction when the encode decoded it.

        The encoder's latent is first moved by the learned correction (`correct`), then coded
        by `compress_latent` (refinement at `effort`, the rate by `quality`, `target_bytes` or
        `target_psnr`).
        """
        _check_rate(quality, target_bytes, target_psnr)
        image = (source if isinstance(source, Image.Image) else self.open(source)).convert("RGB")
        return self.compress_latent(
            self.correct(self.latent_of(image)), image, method=method, quality=quality,
            target_bytes=target_bytes, target_psnr=target_psnr, effort=effort,
            tuned_for=self.corrected_for,
        )  # fmt: skip

    def compress_latent(
        self,
        latent: np.ndarray,
        image: Image.Image,
        *,
        method: str | None = None,
        quality: int | None = None,
        target_bytes: int | None = None,
        target_psnr: float | None = None,
        effort: int | str | None = None,
        tuned_for: str | None = None,
    ) -> Encoded:
        """A latent file of the RGB `image` from its float latent (`latent_of`, maybe corrected).

        `effort` 0..9 (or `auto`; default `settings.effort`, see `refine.resolve_effort`)
        refines the latent for this codec's decoder (`auto`: on `auto_search`, maybe a proxy;
        0..9: on `search_decoder`). `quality`, `target_bytes` or `target_psnr`
        (the smallest file whose decoded PSNR reaches it) sets the rate. `tuned_for` is the
        decoder family the latent already suits (the correction's), recorded when not refined.
        """
        _check_rate(quality, target_bytes, target_psnr)
        size = (image.width, image.height)
        requested = self.settings.effort if effort is None else effort
        effort = resolve_effort(requested, size, self.settings.tile, lambda: self.plan.auto_effort)
        if not effort and target_psnr is None:
            data = self.pack(
                latent, *size, method=method, quality=quality, target_bytes=target_bytes,
                target_family=tuned_for,
            )  # fmt: skip
            return Encoded(data, None)
        coder = get_method(method or self.settings.method)
        pixels = image_to_tensor(image)
        decoded: dict[bytes, Image.Image] = {}
        search = self.decoder
        if effort:
            search = self.auto_search if requested == "auto" else self.search_decoder
        exact = search.dtype == self.render_decoder.dtype and search.pixel_scale == 1

        def file_at(q: int) -> bytes:
            if not effort:
                return self.pack(latent, *size, method=coder.name, quality=q,
                                 target_family=tuned_for)  # fmt: skip
            refined = refine(pixels, latent[None], search, coder, q, steps_for(effort))
            data = self.pack(
                refined.latents[0], *size, method=coder.name, quality=q,
                target_family=self.decoder.family,
            )  # fmt: skip
            if exact:
                decoded[data] = tensor_to_image(refined.images[0])
            return data

        def decoded_psnr(data: bytes) -> float:
            decoded[data] = self.decode(data)
            return psnr(image, decoded[data])

        if target_psnr is not None:
            data = smallest_reaching(file_at, decoded_psnr, target_psnr)
        elif target_bytes is not None:
            data = largest_fitting(file_at, target_bytes)
        else:
            data = file_at(quality or coder.default_quality)
        return Encoded(data, decoded.get(data))

    def pack(
        self,
        latent: np.ndarray,
        width: int,
        height: int,
        *,
        method: str | None = None,
        quality: int | None = None,
        target_bytes: int | None = None,
        target_family: str | None = None,
    ) -> bytes:
        """Quantize and code a latent into a latent file; `target_bytes` picks the quality.

        `target_family` records the decoder family a corrected or refined latent was tuned for.
        """
        coder = get_method(method or self.settings.method)
        _check_rate(quality, target_bytes, None)
        latent = np.ascontiguousarray(latent, dtype=np.float32)

        def file_at(q: int) -> bytes:
            compressed = coder.compress(latent, q)
            return LatentFile(
                space=self.encoder.space,
                method_id=coder.id,
                encoder_family=self.encoder.family,
                width=width,
                height=height,
                latent_shape=latent.shape,
                encoder_fingerprint=self.encoder.encoder_fingerprint,
                params=compressed.params,
                payload=compressed.payload,
                target_family=target_family,
            ).to_bytes()

        if target_bytes is None:
            return file_at(quality or coder.default_quality)
        return largest_fitting(file_at, target_bytes)

    def unpack(self, data: bytes) -> tuple[LatentFile, np.ndarray]:
        """Parse a latent file and dequantize its latent (`LatentFileError` if it is bad)."""
        header = LatentFile.from_bytes(data)
        return header, dequantize(header)

    def decode(self, data: bytes) -> Image.Image:
        """The image of a latent file."""
        return self.decode_batch([data])[0]

    def decode_batch(self, files: Sequence[bytes]) -> list[Image.Image]:
        """Images of several latent files; same-shape latents go through one forward pass."""
        unpacked = [self.unpack(data) for data in files]
        for header, _ in unpacked:
            if header.space != self.decoder.space:
                raise LatentSpaceMismatchError(
                    f"the file is in the {header.space.name} latent space but the decoder "
                    f"{self.decoder.name} speaks {self.decoder.space.name}: set "
                    f"LATENT_GALLERY_DECODER to a {header.space.name} VAE or TAESD"
                )
        images: list[Image.Image | None] = [None] * len(files)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (header, _) in enumerate(unpacked):
            groups.setdefault(header.latent_shape, []).append(index)
        for indices in groups.values():
            batch = torch.from_numpy(np.stack([unpacked[i][1] for i in indices]))
            pixels = self.decode_latents(batch)
            for row, index in enumerate(indices):
                header = unpacked[index][0]
                images[index] = tensor_to_image(pixels[row, :, : header.height, : header.width])
        return images

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


def _searcher(model: LatentAutoencoder):
    """`hardware.measure`'s view of a search model: `grad` -> latents -> images."""

    def with_grad(grad: bool):
        def decode(latents: torch.Tensor) -> torch.Tensor:
            with model.exclusive(), torch.set_grad_enabled(grad):
                return model.decode_differentiable(latents.to(model.device, model.dtype))

        return decode

    return with_grad


def _check_rate(quality: int | None, target_bytes: int | None, target_psnr: float | None) -> None:
    """A `ValueError` unless at most one way of setting the rate is given, quality in 1..100."""
    if sum(x is not None for x in (quality, target_bytes, target_psnr)) > 1:
        raise ValueError("give at most one of quality, target_bytes, target_psnr")
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
