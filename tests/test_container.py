"""The .sdz container: round trip, and only LatentFileError on hostile bytes."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.container import HEADER_BYTES, MAGIC, MAX_LATENT_POSITIONS, VERSION, LatentFile
from codec.errors import LatentFileError
from codec.methods import dequantize
from codec.spaces import SD1, SDXL


def sample(**changes) -> LatentFile:
    fields = dict(
        space=SD1,
        method_id=3,
        encoder_family="taesd",
        width=765,
        height=510,
        latent_shape=(4, 64, 96),
        encoder_fingerprint=bytes(range(8)),
        params=b"\x01\x02",
        payload=bytes(range(200)),
    )
    fields.update(changes)
    return LatentFile(**fields)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_keeps_every_field():
    original = sample(space=SDXL, tuned_for="kl", encoder_family="kl")
    data = original.to_bytes()
    assert data.startswith(MAGIC)
    assert len(data) == original.size
    assert LatentFile.from_bytes(data) == original
    assert original.padding == (3, 2)
    assert original.bits_per_pixel == pytest.approx(len(data) * 8 / (765 * 510))


def test_every_truncation_is_rejected():
    data = sample().to_bytes()
    for end in range(len(data)):
        with pytest.raises(LatentFileError):
            LatentFile.from_bytes(data[:end])


def test_every_single_bit_flip_is_rejected():
    data = sample().to_bytes()
    for bit in range(len(data) * 8):
        corrupted = bytearray(data)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(LatentFileError):
            LatentFile.from_bytes(bytes(corrupted))


def test_unknown_version_is_named():
    body = bytearray(sample().to_bytes()[:-4])
    body[4] = 9
    with pytest.raises(LatentFileError, match="version 9 is not supported"):
        LatentFile.from_bytes(with_crc(bytes(body)))


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (5, "B", 77, "latent space"),
        (7, "B", 9, "model family"),
        (9, "B", 1, "flags"),
        (10, "B", 3, "latent shape"),
        (11, "<H", 0, "latent shape"),
        (11, "<H", 65535, "latent shape"),
        (15, "<I", 10_000, "does not fit"),
    ],
)
def test_inconsistent_header_fields_with_valid_checksum(offset, fmt, value, message):
    body = bytearray(sample().to_bytes()[:-4])
    struct.pack_into(fmt, body, offset, value)
    with pytest.raises(LatentFileError, match=message):
        LatentFile.from_bytes(with_crc(bytes(body)))


def test_huge_lengths_are_rejected_before_any_allocation():
    """A header declaring a 4 GiB payload is refused having allocated under 1 MiB (tracemalloc's
    peak): nothing is sized by the length before it is checked against the bytes given."""
    body = bytearray(sample().to_bytes()[:HEADER_BYTES])
    struct.pack_into("<I", body, HEADER_BYTES - 4, 0xFFFFFFFF)
    data = with_crc(bytes(body))
    tracemalloc.start()
    try:
        with pytest.raises(LatentFileError, match="header says"):
            LatentFile.from_bytes(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_position_limit_covers_huge_shapes():
    side = int(MAX_LATENT_POSITIONS**0.5) + 1
    big = sample(latent_shape=(4, side, side), width=side * 8, height=side * 8)
    with pytest.raises(LatentFileError, match="latent shape"):
        LatentFile.from_bytes(big.to_bytes())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_latent_file_error(data):
    with pytest.raises(LatentFileError):
        LatentFile.from_bytes(MAGIC + data)


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.sdz")), ids=lambda p: p.stem)
def test_version_1_files_decode_bit_identically_forever(path: Path):
    header = LatentFile.from_bytes(path.read_bytes())
    assert header.version == 1
    expected = np.load(path.with_suffix(".npy"))
    decoded = dequantize(header)
    assert decoded.dtype == np.float32
    assert decoded.tobytes() == expected.tobytes()


def test_version_1_fixtures_cover_every_version_1_method():
    ids = {LatentFile.from_bytes(p.read_bytes()).method_id for p in FIXTURES.glob("*.sdz")}
    assert ids == {1, 2, 3}


@pytest.mark.parametrize("offset", [0, 20, 40, 200, -1])
def test_a_flipped_byte_in_a_version_1_file_is_a_clear_error(offset: int):
    data = bytearray((FIXTURES / "coffee-512x384-ec-q75.sdz").read_bytes())
    data[offset] ^= 0x5A
    with pytest.raises(LatentFileError, match=r"checksum|magic"):
        LatentFile.from_bytes(bytes(data))


def test_new_files_are_version_2_and_name_the_integer_ec():
    assert VERSION == 2 and sample().version == 2
    assert LatentFile.from_bytes(sample(method_id=4).to_bytes()).method_id == 4


def test_version_1_files_cannot_name_a_version_2_method():
    with pytest.raises(LatentFileError, match="method 4 does not exist in version 1"):
        LatentFile.from_bytes(sample(method_id=4, version=1).to_bytes())
    assert LatentFile.from_bytes(sample(method_id=3, version=1).to_bytes()).version == 1
