"""One interface over the diffusers autoencoders: images in [0, 1] <-> scaled SD latents."""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Callable, Iterable

import torch

from ..spaces import LatentSpace


def state_fingerprint(
    module: torch.nn.Module, prefixes: Iterable[str], dtype: torch.dtype = torch.float32
) -> bytes:
    """8 bytes of SHA-256 over the weights whose names start with one of `prefixes`.

    The weights are rounded to `dtype` first (float32: as they are).
    """
    digest = hashlib.sha256()
    prefixes = tuple(prefixes)
    for name, tensor in sorted(module.state_dict().items()):
        if name.startswith(prefixes):
            digest.update(name.encode())
            rounded = tensor.detach().to("cpu").to(dtype).to(torch.float32)
            digest.update(rounded.contiguous().numpy().tobytes())
    return digest.digest()[:8]


class LatentAutoencoder:
    """A loaded diffusers autoencoder behind the interface the codec needs.

    `encode` takes images `(B, 3, H, W)` in [0, 1] and returns scaled latents
    `(B, 4, H/8, W/8)`; `decode` is the inverse. Both run under `torch.inference_mode`, one
    call at a time (a lock), so a loaded model can be shared between threads; a caller that
    runs the differentiable passes itself (a refinement search) holds `exclusive()` for the
    whole run, so it sees one precision throughout. On CUDA the model runs in fp16 and falls
    back to fp32 for good, under the lock, if fp16 ever gives a non-finite result.
    `rounded_fingerprints` are the encoder's and decoder's fingerprints at bfloat16 precision
    (see `codec.learned_weights`). `twin` makes a copy in another precision for searches;
    `codec.models.taesd.search_proxy` gives a cheaper search model where the family has one.
    """

    family: str = ""
    encoder_prefixes: tuple[str, ...] = ("encoder.",)
    decoder_prefixes: tuple[str, ...] = ("decoder.",)
    channels_last: bool = False
    """Whether the model runs in channels-last memory (set where it was measured faster)."""
    pixel_scale: int = 1
    """How many times smaller than the photo `decode_differentiable`'s images are (a proxy: 2)."""

    def __init__(
        self,
        module: torch.nn.Module,
        space: LatentSpace,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        module.eval().requires_grad_(False)
        self.space = space
        self.name = name
        self.encoder_fingerprint = state_fingerprint(module, self.encoder_prefixes)
        self.decoder_fingerprint = state_fingerprint(module, self.decoder_prefixes)
        self.rounded_fingerprints = tuple(
            state_fingerprint(module, prefixes, torch.bfloat16)
            for prefixes in (self.encoder_prefixes, self.decoder_prefixes)
        )
        self.device = device
        self.dtype = dtype
        self.module = module.to(device) if dtype == torch.float32 else module.to(device, dtype)
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)
        self._lock = threading.RLock()

    def exclusive(self) -> threading.RLock:
        """The model's lock: hold it (`with model.exclusive():`) around a sequence of
        differentiable passes; `encode` and `decode` take it themselves."""
        return self._lock

    def twin(self, dtype: torch.dtype) -> LatentAutoencoder:
        """A channels-last copy of this model in `dtype` with its own lock (itself if `dtype`
        is its own): a bfloat16 twin takes a decoder step about 2.5× faster than float32 on
        CPUs with native bfloat16 kernels, and many times slower on those without."""
        if dtype == self.dtype:
            return self
        return self.copy(dtype)

    def copy(self, dtype: torch.dtype | None = None) -> LatentAutoencoder:
        """A copy of this model in `dtype` (by default its own) and channels-last memory, with
        its own lock."""
        dtype = dtype or self.dtype
        with self._lock:
            twin = copy.copy(self)
            twin.module = copy.deepcopy(self.module).to(dtype)
        twin.module.to(memory_format=torch.channels_last)
        twin.dtype = dtype
        twin._lock = threading.RLock()
        return twin

    def encode_differentiable(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled latents of images in [0, 1], with autograd (model dtype and device)."""
        raise NotImplementedError

    def decode_differentiable(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (not clamped) of scaled latents, with autograd."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled float32 latents (on the CPU) of float images in [0, 1]."""
        return self.run(self.encode_differentiable, images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Float32 images in [0, 1] (on the CPU) of scaled latents."""
        return self.run(self.decode_differentiable, latents).clamp(0, 1)

    def run(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """`fn(x)` under the lock and inference mode, `x` moved to the model's device and
        dtype (on a non-finite half-precision result, again in float32, for good); float32 on
        the CPU."""
        with self._lock, torch.inference_mode():
            out = fn(x.to(self.device, self.dtype))
            if self.dtype != torch.float32 and not torch.isfinite(out).all():
                self.module.to(torch.float32)
                self.dtype = torch.float32
                out = fn(x.to(self.device, self.dtype))
            return out.float().cpu()

    def describe(self) -> str:
        """One line for logs and `/healthz`."""
        return f"{self.family}:{self.name} ({self.space.name}, {self.device}, {self.dtype})"
