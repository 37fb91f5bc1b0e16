"""Latent Gallery's codec: images stored as quantized, entropy-coded SD VAE latents.

>>> from codec import Codec
>>> codec = Codec.from_env()
>>> data = codec.encode("photo.jpg")          # bytes of a .sdz latent file
>>> image = codec.decode(data)                # PIL.Image
"""

from .container import LatentFile
from .errors import (
    CodecError,
    ImageInputError,
    LatentFileError,
    LatentSpaceMismatchError,
    ModelLoadError,
)
from .pipeline import Codec
from .settings import CodecSettings

__all__ = [
    "Codec",
    "CodecError",
    "CodecSettings",
    "ImageInputError",
    "LatentFile",
    "LatentFileError",
    "LatentSpaceMismatchError",
    "ModelLoadError",
]
