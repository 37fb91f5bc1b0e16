"""The learned latent correction: training, the file, which models it serves, what it gains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from codec import Codec, CodecSettings, LatentFile, SettingsError, load_codec, unpack
from codec.correction import CORRECTIONS, correction_for
from codec.errors import ModelLoadError
from codec.images import open_image, tensor_to_image
from codec.measures import psnr
from codec.models import load_autoencoder
from codec.training.correction import main
from codec.transform import correct, latent_of
from tests.conftest import noise
from tests.shared import kodak_path, taesd_path
from tests.tiny_models import tiny_taesd


@pytest.fixture
def trained(env, tmp_path):
    """A correction file trained for a few steps for the tiny TAESD (seed 0)."""
    folder = tmp_path / "train"
    folder.mkdir()
    noise(128, 96, seed=1).save(folder / "a.png")
    noise(100, 140, seed=2).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image; skipped by suffix")
    (folder / "broken.png").write_bytes(b"not a PNG; skipped with a warning")
    out = folder / "tiny.safetensors"
    argv = ["--images", str(folder), "--steps", "4", "--crop", "10", "--batch", "2",
            "--width", "6", "--depth", "4"]  # fmt: skip
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_training_writes_a_correction_for_its_models_only(trained):
    correction, trained_for = CORRECTIONS.read(trained)
    assert (correction.width, correction.depth) == (6, 4)
    model, other = tiny_taesd(0), tiny_taesd(1)
    assert trained_for == {
        "encoder": model.rounded_fingerprints[0].hex(),
        "decoder": model.rounded_fingerprints[1].hex(),
    }
    assert correction_for("auto", model, model, trained.parent) is not None
    assert correction_for("auto", other, other, trained.parent) is None
    assert correction_for("auto", model, other, trained.parent) is None
    assert correction_for("off", model, model, trained.parent) is None
    with pytest.raises(ModelLoadError, match="made for other models"):
        correction_for(str(trained), other, other)
    latent = np.random.default_rng(0).normal(size=(4, 6, 8)).astype(np.float32)
    assert not np.allclose(correction.apply_to(latent), latent), "training moved nothing"


def test_codec_applies_the_correction_and_records_the_decoder(trained):
    model = tiny_taesd(0)
    image = noise(64, 48, seed=3)
    corrected = Codec(CodecSettings(correction=str(trained)), encoder=model, decoder=model)
    plain = Codec(CodecSettings(correction="off"), encoder=model, decoder=model)
    files = [codec.compress(image, quality=90, effort=0).data for codec in (corrected, plain)]
    assert LatentFile.from_bytes(files[0]).tuned_for == "taesd"
    assert LatentFile.from_bytes(files[1]).tuned_for is None
    latents = [unpack(data, model.space)[1] for data in files]
    assert not np.allclose(latents[0], latents[1])
    assert Codec(CodecSettings(), encoder=model, decoder=model).correction is None


def test_bad_correction_settings(tmp_path, trained):
    with pytest.raises(SettingsError, match="CORRECTION='sometimes': expected auto, off or a file"):
        load_codec(CodecSettings(correction="sometimes"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    for path in (junk, trained.with_suffix(".txt")):
        with pytest.raises(ModelLoadError, match="not a latent correction file"):
            CORRECTIONS.read(path)


def test_training_usage_errors(env, tmp_path, capsys):
    assert main(["--images", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: no images found in --images"
    Image.new("RGB", (64, 64)).save(tmp_path / "small.png")
    assert main(["--images", str(tmp_path), "--crop", "8"]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]  # after the progress bars
    assert last_line.startswith("error: crop must be over 8 latent positions")
    assert main(["--images", str(tmp_path), "--crop", "9", "--depth", "1"]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith("error: depth counts convolutions and must be at least 2")
    Image.new("RGB", (64, 56)).save(tmp_path / "small.png")
    assert main(["--images", str(tmp_path), "--crop", "9"]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith("error: no training photo is 72 pixels a side")


@pytest.mark.shared
def test_shipped_correction_lifts_real_taesd_on_kodak():
    """The correction in codec/weights serves the real TAESD and was not trained on Kodak:
    on kodim23 it lifts the float round trip and the default file's PSNR at about its size."""
    weights = str(taesd_path())
    model = load_autoencoder(weights, "cpu")
    found = correction_for("auto", model, model)
    assert found is not None, f"none in {CORRECTIONS.folder} for {weights}"
    codecs = [Codec(CodecSettings(correction=setting), encoder=model, decoder=model)
              for setting in ("auto", "off")]  # fmt: skip
    photo = open_image(kodak_path("kodim23.png"))
    latent = latent_of(codecs[0], photo, corrected=False)
    trips = [c.decode_latents(torch.from_numpy(correct(c, latent))[None])[0] for c in codecs]
    float_psnr = [psnr(photo, tensor_to_image(trip)) for trip in trips]
    assert float_psnr[0] > float_psnr[1] + 0.3, float_psnr
    files = [c.compress(photo, effort=0).data for c in codecs]
    assert len(files[0]) < 1.1 * len(files[1])
    decoded_psnr = [psnr(photo, c.decompress(data)) for c, data in zip(codecs, files, strict=True)]
    assert decoded_psnr[0] > decoded_psnr[1] + 0.3, decoded_psnr
