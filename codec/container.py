"""The `.sdz` latent file: a small binary header, the method's params and payload, a CRC.

See docs/FORMAT.md. `LatentFile.from_bytes` parses untrusted bytes and raises only
`LatentFileError`; no allocation is sized by a header field before it has been checked.
`unpack` reads a file's latent for a decoder.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import LatentFileError, LatentSpaceMismatchError
from .measures import bits_per_pixel
from .methods import dequantize
from .spaces import LatentSpace, space_by_id

MAGIC = b"SDZ\x1a"
VERSION = 2
"""The version new files are written in: 2 added method 4 (the integer `ec`)."""
VERSIONS = (1, 2)
"""The versions this reader reads."""
_FIRST_VERSION = {4: 2}
"""Methods newer than version 1, by id: the first version that may name them."""
# magic, version, space, method, encoder family, family tuned for, flags,
# channels, latent height, latent width, image width, image height,
# encoder fingerprint, params length, payload length
_HEADER = struct.Struct("<4sBBBBBBBHHII8sHI")
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size
OVERHEAD_BYTES = HEADER_BYTES + _CRC.size
MAX_LATENT_POSITIONS = 1 << 20  # 67 megapixels at 8x8 pixels per latent position
MAX_PARAMS_BYTES = 4096
FAMILIES = {"taesd": 1, "kl": 2}
_FAMILY_NAMES = {code: name for name, code in FAMILIES.items()}


@dataclass(frozen=True)
class LatentFile:
    """The parsed fields of a latent file."""

    space: LatentSpace
    method_id: int
    encoder_family: str
    width: int
    height: int
    latent_shape: tuple[int, int, int]
    encoder_fingerprint: bytes
    params: bytes
    payload: bytes
    tuned_for: str | None = None
    """The decoder family the latent was moved towards (learned correction, refinement); None:
    the encoder's own latent."""
    version: int = VERSION

    @property
    def padding(self) -> tuple[int, int]:
        """Pixels of edge replication added at the right and bottom before encoding."""
        _, latent_h, latent_w = self.latent_shape
        scale = self.space.downscale
        return latent_w * scale - self.width, latent_h * scale - self.height

    @property
    def size(self) -> int:
        """Bytes of the whole file."""
        return OVERHEAD_BYTES + len(self.params) + len(self.payload)

    @property
    def bits_per_pixel(self) -> float:
        """File bits per pixel of the original image."""
        return bits_per_pixel(self.size, self.width, self.height)

    def to_bytes(self) -> bytes:
        """Serialize, appending the CRC-32 of everything before it."""
        channels, latent_h, latent_w = self.latent_shape
        header = _HEADER.pack(
            MAGIC,
            self.version,
            self.space.id,
            self.method_id,
            FAMILIES[self.encoder_family],
            FAMILIES[self.tuned_for] if self.tuned_for else 0,
            0,
            channels,
            latent_h,
            latent_w,
            self.width,
            self.height,
            self.encoder_fingerprint,
            len(self.params),
            len(self.payload),
        )
        body = header + self.params + self.payload
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> LatentFile:
        """Parse and validate a latent file."""
        if len(data) < OVERHEAD_BYTES:
            raise LatentFileError(f"truncated latent file: {len(data)} bytes")
        (magic, version, space_id, method_id, encoder_code, tuned_code, flags, channels,
         latent_h, latent_w, width, height, fingerprint, params_len, payload_len,
         ) = _HEADER.unpack_from(data)  # fmt: skip
        if magic != MAGIC:
            raise LatentFileError("not a latent file (bad magic)")
        if version not in VERSIONS:
            raise LatentFileError(
                f"latent file version {version} is not supported (this reader knows "
                f"{' and '.join(map(str, VERSIONS))})"
            )
        expected = OVERHEAD_BYTES + params_len + payload_len
        if len(data) != expected:
            raise LatentFileError(f"latent file is {len(data)} bytes, header says {expected}")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(memoryview(data)[: -_CRC.size]) != crc:
            raise LatentFileError("latent file is corrupted (checksum mismatch)")
        space = space_by_id(space_id)
        if version < _FIRST_VERSION.get(method_id, 1):
            raise LatentFileError(f"method {method_id} does not exist in version {version} files")
        if flags != 0:
            raise LatentFileError(f"unknown header flags {flags:#x}")
        if encoder_code not in _FAMILY_NAMES or (tuned_code and tuned_code not in _FAMILY_NAMES):
            raise LatentFileError("unknown model family in header")
        if channels != space.channels or not 0 < latent_h * latent_w <= MAX_LATENT_POSITIONS:
            raise LatentFileError(f"bad latent shape {channels}x{latent_h}x{latent_w}")
        scale = space.downscale
        if -(-width // scale) != latent_w or -(-height // scale) != latent_h:
            raise LatentFileError(f"image size {width}x{height} does not fit the latent shape")
        if params_len > MAX_PARAMS_BYTES:
            raise LatentFileError(f"method parameters too long: {params_len} bytes")
        start = HEADER_BYTES + params_len
        return cls(
            space=space,
            method_id=method_id,
            encoder_family=_FAMILY_NAMES[encoder_code],
            width=width,
            height=height,
            latent_shape=(channels, latent_h, latent_w),
            encoder_fingerprint=fingerprint,
            params=bytes(data[HEADER_BYTES:start]),
            payload=bytes(data[start : start + payload_len]),
            tuned_for=_FAMILY_NAMES.get(tuned_code),
            version=version,
        )


def unpack(data: bytes, space: LatentSpace) -> tuple[LatentFile, np.ndarray]:
    """A latent file's header and dequantized latent, for a decoder of `space`: raises
    `LatentFileError` if the file is bad, `LatentSpaceMismatchError` if it is in another space."""
    header = LatentFile.from_bytes(data)
    if header.space != space:
        raise LatentSpaceMismatchError(
            f"the file is in the {header.space.name} latent space but the decoder speaks "
            f"{space.name}: set LATENT_GALLERY_DECODER to a {header.space.name} VAE or TAESD"
        )
    return header, dequantize(header)
