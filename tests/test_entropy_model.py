"""The integer `ec`: exact round trips, the shipped model, bit-exact decodes across CPU kinds,
and sizes against `ec1` on real latents."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.errors import LatentFileError
from codec.methods import ec, get_method
from codec.methods.ec.model import (
    ALPHABET,
    MODEL_ID,
    RADIUS,
    TABLE_BITS,
    from_alphabet,
    shipped_model,
    split_mean,
    step_feature,
    to_alphabet,
)
from codec.methods.ec.walk import fit_means, predict
from tests.shared import kodak_path, taesd_path
from tests.test_method_ec1 import smooth_latent

METHOD = get_method("ec")
LATENT = smooth_latent(24, 32)
COMPRESSED = METHOD.compress(LATENT, METHOD.default_quality)
AVX2_ONLY = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
"""A process that computes as a CPU without AVX-512 would (numpy 2.4 names its AVX-512
dispatch targets X86_V4, AVX512_ICL and AVX512_SPR)."""


def test_the_new_method_is_ec_and_the_old_one_ec1() -> None:
    assert (METHOD.name, METHOD.id) == ("ec", 4)
    assert (get_method("ec1").name, get_method("ec1").id) == ("ec1", 3)


def test_shipped_model_is_integer_and_normalised() -> None:
    model = shipped_model(MODEL_ID)
    assert model.frequencies.dtype == np.int64 and (model.frequencies >= 1).all()
    assert (model.frequencies.sum(-1) == 1 << TABLE_BITS).all()
    assert model.frequencies.shape[-1] == ALPHABET
    assert shipped_model(MODEL_ID + 100) is None


@pytest.mark.parametrize("quality", [1, 40, METHOD.default_quality, 100])
@pytest.mark.parametrize("shape", [(4, 24, 32), (4, 1, 1), (4, 1, 200), (4, 200, 1), (4, 3, 5)])
def test_decoder_reproduces_the_quantizer(shape: tuple[int, int, int], quality: int) -> None:
    latent = smooth_latent(shape[1], shape[2], seed=quality)[:, : shape[1], : shape[2]]
    compressed = METHOD.compress(latent, quality)
    decoded = METHOD.decompress(compressed.params, compressed.payload, shape)
    intended = ec.quantize(shipped_model(), latent, quality)
    assert decoded.dtype == np.float32 and decoded.shape == shape
    np.testing.assert_array_equal(decoded, intended.dequantize())
    assert np.all(np.abs(decoded - latent) <= 2 * intended.steps[:, None, None])


def test_escapes_round_trip() -> None:
    """Values far from any prediction take the escape symbols and their raw bits."""
    latent = np.zeros((4, 6, 8), np.float32)
    latent[:, 2, 3] = [600.0, -600.0, 30.0, -2.0]
    latent[1, 4, 5] = 300.0
    compressed = METHOD.compress(latent, 100)
    decoded = METHOD.decompress(compressed.params, compressed.payload, latent.shape)
    np.testing.assert_array_equal(decoded, ec.quantize(shipped_model(), latent, 100).dequantize())


def test_alphabet_inverts() -> None:
    offsets = np.arange(-2 * 32767, 2 * 32767 + 1, 7)
    coded, raw, bits = to_alphabet(offsets)
    assert coded.min() >= 0 and coded.max() < ALPHABET
    base, sign, count = from_alphabet(coded)
    np.testing.assert_array_equal(count, bits)
    np.testing.assert_array_equal(sign * (base + raw), offsets)
    assert (raw < (1 << bits)).all()
    np.testing.assert_array_equal(
        coded[np.abs(offsets) <= RADIUS], offsets[np.abs(offsets) <= RADIUS] + RADIUS
    )


def test_mean_split_and_step_feature_are_integer_exact() -> None:
    means = np.arange(-200, 200)
    centre, fraction = split_mean(means)
    assert (np.abs(means - 64 * centre) <= 32).all() and set(fraction) == {0, 1, 2, 3}
    assert step_feature(np.array([1.0]))[0] == 0
    assert step_feature(np.array([0.5]))[0] == -64


def test_model_outputs_and_files_are_identical_across_runs() -> None:
    symbols = ec.quantize(shipped_model(), LATENT, 60).symbols
    coefs, _ = fit_means(symbols)
    steps = step_feature(np.full(4, 0.25))
    first, second = (predict(shipped_model(), coefs, symbols, steps) for _ in range(2))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert METHOD.compress(LATENT, 75) == COMPRESSED


_DECODE = """
import hashlib, sys
from pathlib import Path
from codec.methods import dequantize
from codec.container import LatentFile
for path in sys.argv[1:]:
    latent = dequantize(LatentFile.from_bytes(Path(path).read_bytes()))
    print(hashlib.sha256(latent.tobytes()).hexdigest())
"""


def decode_in_subprocess(paths: list[Path], env: dict[str, str]) -> list[str]:
    """The sha256 of each file's decoded latent, in a fresh interpreter with `env` added."""
    result = subprocess.run([sys.executable, "-c", _DECODE, *map(str, paths)], env=os.environ | env,
                            capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    return result.stdout.split()


def test_decodes_bit_identically_with_and_without_avx512(tmp_path: Path) -> None:
    from codec.container import LatentFile
    from codec.spaces import SD1

    paths, expected = [], []
    for i, (quality, shape) in enumerate([(40, (4, 40, 56)), (75, (4, 33, 47)), (95, (4, 16, 64))]):
        latent = smooth_latent(shape[1], shape[2], seed=i)[:, : shape[1], : shape[2]]
        compressed = METHOD.compress(latent, quality)
        header = LatentFile(space=SD1, method_id=METHOD.id, encoder_family="taesd",
                            width=shape[2] * 8, height=shape[1] * 8, latent_shape=shape,
                            encoder_fingerprint=bytes(8), params=compressed.params,
                            payload=compressed.payload)  # fmt: skip
        paths.append(tmp_path / f"{i}.sdz")
        paths[-1].write_bytes(header.to_bytes())
        decoded = METHOD.decompress(compressed.params, compressed.payload, shape)
        expected.append(hashlib.sha256(decoded.tobytes()).hexdigest())
    assert decode_in_subprocess(paths, {}) == expected
    assert decode_in_subprocess(paths, AVX2_ONLY) == expected


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_bit_flips_give_a_file_error_or_a_sane_latent(data: st.DataObject) -> None:
    in_params = data.draw(st.booleans())
    blob = bytearray(COMPRESSED.params if in_params else COMPRESSED.payload)
    bit = data.draw(st.integers(min_value=0, max_value=8 * len(blob) - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    params, payload = (
        (bytes(blob), COMPRESSED.payload) if in_params else (COMPRESSED.params, bytes(blob))
    )
    try:
        out = METHOD.decompress(params, payload, LATENT.shape)
    except LatentFileError:
        return
    assert out.shape == LATENT.shape and out.dtype == np.float32 and np.isfinite(out).all()


@settings(max_examples=60, deadline=None)
@given(params=st.binary(max_size=80), payload=st.binary(max_size=4000))
def test_random_bytes_raise_only_latent_file_error(params: bytes, payload: bytes) -> None:
    with contextlib.suppress(LatentFileError):
        METHOD.decompress(params, payload, LATENT.shape)


@pytest.mark.parametrize("cut", [0, 1, 3, 10])
def test_truncated_payload_and_params(cut: int) -> None:
    with pytest.raises(LatentFileError):
        METHOD.decompress(COMPRESSED.params[:cut], COMPRESSED.payload, LATENT.shape)
    with pytest.raises(LatentFileError):
        METHOD.decompress(COMPRESSED.params, COMPRESSED.payload[:cut], LATENT.shape)


def test_unknown_model_and_trailing_data_are_refused() -> None:
    with pytest.raises(LatentFileError, match="model 200 is unknown"):
        METHOD.decompress(b"\xc8" + COMPRESSED.params[1:], COMPRESSED.payload, LATENT.shape)
    with pytest.raises(LatentFileError):
        METHOD.decompress(COMPRESSED.params, COMPRESSED.payload + b"\xff" * 8, LATENT.shape)


@pytest.mark.shared
def test_smaller_than_ec1_on_real_latents() -> None:
    """Kodak photos through the real TAESD encoder: `ec` codes them in fewer bytes than `ec1`."""
    from PIL import Image

    from codec import CodecSettings, load_codec
    from codec.transform import latent_of

    weights = str(taesd_path())
    codec = load_codec(CodecSettings(encoder=weights, decoder=weights, device="cpu"))
    old = get_method("ec1")
    for name in ("kodim03.png", "kodim14.png", "kodim23.png"):
        image = Image.open(kodak_path(name)).convert("RGB").resize((384, 256), Image.LANCZOS)
        latent = latent_of(codec, image)
        for quality in (60, 75):
            new_size = sum(map(len, vars(METHOD.compress(latent, quality)).values()))
            old_size = sum(map(len, vars(old.compress(latent, quality)).values()))
            assert new_size <= old_size, (name, quality, new_size, old_size)
