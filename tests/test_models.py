"""Model loading and the encode/decode interface, on tiny random and real TAESD weights."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from codec.errors import ModelLoadError
from codec.images import image_to_tensor, open_image
from codec.methods import get_method
from codec.models import KLAutoencoder, TinyAutoencoder, family_of, load_autoencoder
from codec.models.taesd import TinyAutoencoder as Tiny
from codec.models.taesd import search_proxy, thumbnail_parts
from codec.refine import refine
from codec.spaces import SD1, SDXL
from tests.shared import kodak_path, taesd_path
from tests.tiny_models import CPU, tiny_kl, tiny_kl_module, tiny_taesd, tiny_taesd_module


@pytest.mark.parametrize("make", [tiny_taesd, tiny_kl])
def test_latent_shape_and_range(make):
    model = make()
    latents = model.encode(torch.rand(2, 3, 48, 32))
    assert latents.shape == (2, 4, 6, 4)
    images = model.decode(latents)
    assert images.shape == (2, 3, 48, 32)
    assert images.min() >= 0 and images.max() <= 1


def test_fingerprints_separate_encoder_and_decoder():
    a, b = tiny_kl(seed=1), tiny_kl(seed=1)
    assert a.encoder_fingerprint == b.encoder_fingerprint
    assert a.encoder_fingerprint != a.decoder_fingerprint
    with torch.no_grad():
        b.module.decoder.conv_out.weight.add_(1)
    fresh = KLAutoencoder(b.module, SD1, "edited", CPU, torch.float32)
    assert fresh.encoder_fingerprint == a.encoder_fingerprint
    assert fresh.decoder_fingerprint != a.decoder_fingerprint


def test_kl_diffusers_folder_and_single_file_load_the_same_weights(tmp_path):
    module = tiny_kl_module(seed=3)
    module.save_pretrained(tmp_path)
    x = torch.rand(1, 3, 32, 32)
    expected = KLAutoencoder(module, SD1, "direct", CPU, torch.float32).encode(x)
    for spec in (tmp_path, tmp_path / "diffusion_pytorch_model.safetensors"):
        model = load_autoencoder(str(spec), device="cpu")
        assert isinstance(model, KLAutoencoder)
        assert model.space == SD1
        torch.testing.assert_close(model.encode(x), expected)


def test_kl_space_comes_from_scaling_factor(tmp_path):
    tiny_kl_module(scaling_factor=SDXL.scaling_factor).save_pretrained(tmp_path)
    assert load_autoencoder(str(tmp_path), device="cpu").space == SDXL


def test_taesd_diffusers_folder(tmp_path):
    folder = tmp_path / "taesdxl-tiny"
    tiny_taesd_module(seed=4).save_pretrained(folder)
    model = load_autoencoder(str(folder), device="cpu")
    assert isinstance(model, TinyAutoencoder)
    assert model.space == SDXL


def test_comfy_pair_key_mapping(tmp_path):
    """A ComfyUI pair written from a random AutoencoderTiny loads back to the same outputs."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(5)
    module = AutoencoderTiny()
    state = module.state_dict()
    encoder = {
        k.removeprefix("encoder.layers."): v for k, v in state.items() if k.startswith("encoder.")
    }
    decoder = {}
    for key, value in state.items():
        if key.startswith("decoder.layers."):
            index, rest = key.removeprefix("decoder.layers.").split(".", 1)
            decoder[f"{int(index) + 1}.{rest}"] = value
    save_file(encoder, tmp_path / "taesd_encoder.safetensors")
    save_file(decoder, tmp_path / "taesd_decoder.safetensors")
    assert family_of(str(tmp_path)) == "taesd"
    loaded = load_autoencoder(str(tmp_path), device="cpu")
    reference = Tiny(module, SD1, "reference", CPU, torch.float32)
    z = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(loaded.decode(z), reference.decode(z))


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        load_autoencoder(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no model here"):
        load_autoencoder(str(tmp_path))


def test_unreachable_hub_names_the_setting(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="LATENT_GALLERY_ENCODER") as info:
        load_autoencoder("madebyollin/taesd-not-cached", setting="LATENT_GALLERY_ENCODER")
    assert "taesd_encoder.safetensors" in str(info.value)


def test_half_precision_overflow_falls_back_to_float32():
    model = tiny_taesd(seed=6)
    with torch.no_grad():
        model.module.decoder.layers[-1].bias.fill_(6e4)
    model.module.half()
    model.dtype = torch.float16
    try:
        out = model.run(model.decode_differentiable, torch.randn(1, 4, 4, 4))
    except RuntimeError as exc:
        pytest.skip(f"this torch build cannot run fp16 convolutions on CPU: {exc}")
    assert model.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_real_taesd_round_trip_of_a_kodak_photo():
    model = load_autoencoder(str(taesd_path()), device="cpu")
    assert model.space == SD1
    x = image_to_tensor(open_image(kodak_path("kodim23.png")))
    latent = model.encode(x)
    assert latent.shape == (1, 4, 64, 96)
    assert latent.min() > -8 and latent.max() < 8
    mse = torch.mean((model.decode(latent) - x) ** 2).item()
    assert 10 * np.log10(1 / mse) > 25


@pytest.mark.parametrize(
    ("alias", "hub_id", "family"),
    [("sd-vae", "stabilityai/sd-vae-ft-mse", "kl"), ("taesdxl", "madebyollin/taesdxl", "taesd")],
)
def test_aliases_name_the_default_hub_models(monkeypatch, alias, hub_id, family):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(ModelLoadError, match=f"cannot load {family} model '{hub_id}'"):
        load_autoencoder(alias)


def test_a_search_holds_the_model_so_a_concurrent_fp32_fallback_waits_for_it():
    """A render that falls back to fp32 while an encode's search runs on the same model must
    not switch the precision under the search (it would fail mid-forward on mixed dtypes)."""
    model = tiny_taesd(seed=6)
    with torch.no_grad():
        model.module.decoder.layers[-1].bias.fill_(6e4)
    model.module.half()
    model.dtype = torch.float16
    latents = torch.randn(1, 4, 6, 8)
    rendered: list[torch.Tensor] = []
    render = threading.Thread(target=lambda: rendered.append(model.decode(latents)))

    def start_render_once(module, args):
        if not render.is_alive() and not rendered:
            render.start()
            render.join(timeout=0.5)

    hook = model.module.decoder.register_forward_pre_hook(start_render_once)
    method = get_method("ec")
    try:
        refine(torch.rand(1, 3, 48, 64), latents.numpy(), model, method, 50, 2)
    except RuntimeError as exc:
        if "Half" in str(exc) and "not implemented" in str(exc):
            pytest.skip(f"this torch build cannot run fp16 convolutions on CPU: {exc}")
        raise
    finally:
        hook.remove()
        render.join(timeout=60)
    assert rendered and torch.isfinite(rendered[0]).all() and model.dtype == torch.float32


def test_only_taesd_has_a_search_proxy_and_a_thumbnail_split():
    taesd, kl = tiny_taesd(), tiny_kl()
    proxy = search_proxy(taesd)
    assert proxy is not None and proxy.pixel_scale == 2 and taesd.pixel_scale == 1
    features, stage = thumbnail_parts(taesd)
    assert stage(features(torch.randn(1, 4, 3, 5))).shape == (1, 3, 6, 10)  # at 1/4 scale
    assert search_proxy(kl) is None and thumbnail_parts(kl) is None
    assert not hasattr(kl, "proxy") and not hasattr(kl, "thumbnail_parts")
