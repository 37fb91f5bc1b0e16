"""Latent Gallery's codec: images stored as quantized, entropy-coded SD VAE latents.

>>> from codec import CodecSettings, load_codec
>>> codec = load_codec(CodecSettings.from_env())   # SettingsError on a bad variable
>>> data = codec.compress("photo.jpg").data        # bytes of a .sdz latent file
>>> image = codec.decompress(data)                 # PIL.Image
"""

from .container import LatentFile, unpack
from .errors import (
    CodecError,
    ImageInputError,
    LatentFileError,
    LatentSpaceMismatchError,
    ModelLoadError,
    SettingsError,
)
from .pipeline import Codec, Encoded, load_codec
from .settings import CodecSettings

__all__ = [
    "Codec",
    "CodecError",
    "CodecSettings",
    "Encoded",
    "ImageInputError",
    "LatentFile",
    "LatentFileError",
    "LatentSpaceMismatchError",
    "ModelLoadError",
    "SettingsError",
    "load_codec",
    "unpack",
]
