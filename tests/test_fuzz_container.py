"""Property tests of the latent-file parser: whatever the bytes, only `LatentFileError` escapes
`codec.unpack` (header + the palette, q8, ec1 and ec payload parsers), and memory stays bounded.

Edits of valid files recompute the CRC, so they reach the method parsers instead of stopping
at the checksum.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import LatentFile, LatentFileError, LatentSpaceMismatchError, unpack
from codec.container import _HEADER, HEADER_BYTES, MAX_LATENT_POSITIONS
from codec.methods import get_method, method_names
from codec.spaces import SD1

SHAPE = (4, 3, 5)
FIELDS = (
    "magic", "version", "space", "method", "encoder", "target", "flags", "channels",
    "latent_h", "latent_w", "width", "height", "fingerprint", "params_len", "payload_len",
)  # fmt: skip
CODES = ("4s", *"BBBBBBBHHII", "8s", *"HI")
NUMERIC = {
    name: 8 * struct.calcsize(code)
    for name, code in zip(FIELDS, CODES, strict=True)
    if not code.endswith("s")
}  # field -> bits
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def latent_file(
    method: str, shape: tuple[int, int, int] = SHAPE, *, params: bytes | None = None,
    payload: bytes | None = None,
) -> bytes:  # fmt: skip
    """A valid file of `method` coding a random latent of `shape`, or with the given parts."""
    coder = get_method(method)
    latent = np.random.default_rng(1).normal(0, 1.5, shape).astype(np.float32)
    compressed = coder.compress(latent, coder.default_quality)
    return LatentFile(
        space=SD1,
        method_id=coder.id,
        encoder_family="taesd",
        width=shape[2] * 8 - 3,
        height=shape[1] * 8 - 5,
        latent_shape=shape,
        encoder_fingerprint=b"\x01" * 8,
        params=compressed.params if params is None else params,
        payload=compressed.payload if payload is None else payload,
    ).to_bytes()


VALID = {name: latent_file(name) for name in method_names()}


def with_crc(body: bytes) -> bytes:
    """`body` (a file without its CRC) with a correct CRC appended."""
    return body + struct.pack("<I", zlib.crc32(body))


def edit_header(data: bytes, **fields: int) -> bytes:
    """A file with header fields replaced and the CRC recomputed."""
    values = dict(zip(FIELDS, _HEADER.unpack_from(data), strict=True))
    values.update(fields)
    return with_crc(_HEADER.pack(*values.values()) + data[HEADER_BYTES:-4])


def parse(data: bytes) -> LatentFile | None:
    """`codec.unpack` for an SD 1 decoder, checking a success: a finite float32 latent of the
    header's shape. None if the file was refused with `LatentFileError` or, for another
    space, `LatentSpaceMismatchError` (anything else escapes and fails)."""
    try:
        header, latent = unpack(data, SD1)
    except (LatentFileError, LatentSpaceMismatchError) as exc:
        assert str(exc)
        return None
    assert latent.shape == header.latent_shape and latent.dtype == np.float32
    assert np.isfinite(latent).all()
    return header


@pytest.mark.parametrize("method", method_names())
def test_valid_files_parse(method):
    header = parse(VALID[method])
    assert header is not None and header.latent_shape == SHAPE


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    assert parse(data) is None


@FUZZ
@given(st.sampled_from(method_names()), st.binary(max_size=400))
def test_random_bytes_after_a_valid_header_start(method, tail):
    assert parse(VALID[method][:8] + tail) is None


@pytest.mark.parametrize("method", method_names())
def test_every_truncation_and_every_bit_flip_is_refused(method):
    data = VALID[method]
    for end in range(len(data)):
        assert parse(data[:end]) is None, end
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert parse(bytes(flipped)) is None, bit  # CRC-32 catches every 1-bit error


@FUZZ
@given(
    st.sampled_from(method_names()),
    st.sampled_from(sorted(NUMERIC)).flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.one_of(st.integers(0, 2 ** NUMERIC[name] - 1), st.integers(0, 9)),
        )
    ),
)
def test_edited_header_fields_with_a_fixed_crc(method, edit):
    name, value = edit
    parse(edit_header(VALID[method], **{name: value}))


@FUZZ
@given(st.sampled_from(method_names()), st.integers(1, 40), st.integers(1, 40),
       st.integers(0, 7), st.integers(0, 7))  # fmt: skip
def test_consistent_but_wrong_shapes(method, latent_h, latent_w, cut_w, cut_h):
    """Another shape, with a matching image size: the method parser meets a wrong shape."""
    edited = edit_header(
        VALID[method], latent_h=latent_h, latent_w=latent_w,
        width=latent_w * 8 - cut_w, height=latent_h * 8 - cut_h,
    )  # fmt: skip
    parse(edited)


@FUZZ
@given(st.sampled_from(method_names()), st.data())
def test_edited_params_and_payload_with_a_fixed_crc(method, data):
    """Bytes overwritten, inserted or deleted in the params and the payload (lengths fixed)."""
    header = LatentFile.from_bytes(VALID[method])
    parts = {"params": bytearray(header.params), "payload": bytearray(header.payload)}
    for _ in range(data.draw(st.integers(1, 4))):
        part = parts[data.draw(st.sampled_from(sorted(parts)))]
        at = data.draw(st.integers(0, len(part)))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        new = data.draw(st.binary(min_size=1, max_size=4))
        if action == "set" and at < len(part):
            part[at : at + len(new)] = new[: len(part) - at]
        elif action == "insert":
            part[at:at] = new
        else:
            del part[at : at + len(new)]
    parse(latent_file(method, params=bytes(parts["params"]), payload=bytes(parts["payload"])))


@FUZZ
@given(st.sampled_from(method_names()), st.data())
def test_random_params_and_payload_of_the_right_lengths(method, data):
    """Arbitrary parameter bytes (steps, bounds, coefficients, palette size) and payloads."""
    header = LatentFile.from_bytes(VALID[method])
    params = data.draw(st.binary(min_size=len(header.params), max_size=len(header.params)))
    words = data.draw(st.integers(0, 2 * len(header.payload) // 4 + 2))
    payload = data.draw(st.binary(min_size=4 * words, max_size=4 * words))
    keep_payload = data.draw(st.booleans())
    parse(latent_file(method, params=params, payload=header.payload if keep_payload else payload))


def peak_bytes(data: bytes) -> int:
    """Peak Python-traced allocation (numpy, zlib and lzma buffers included) of parsing."""
    tracemalloc.start()
    try:
        parse(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", method_names())
def test_memory_is_bounded_by_the_shape_not_by_what_the_file_claims(method):
    """A tiny file claiming a small shape parses in little memory; one claiming the largest
    allowed shape (67 megapixels) takes at most 64 bytes per latent value."""
    small = latent_file(method, (4, 16, 16))
    assert peak_bytes(small) < 2**20
    side = int(MAX_LATENT_POSITIONS**0.5)
    huge = edit_header(small, latent_h=side, latent_w=side, width=side * 8, height=side * 8)
    assert peak_bytes(huge) < 64 * 4 * MAX_LATENT_POSITIONS
