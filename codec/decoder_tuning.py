"""A decoder tuned for our files: the decoder's own architecture, fine-tuned on what it reads here.

TAESD's decoder was trained on its encoder's float latents, to draw previews. What it reads
here is a corrected latent that a method quantized and reconstructed, so it never saw the error
its input carries. `codec.training.decoder` fine-tunes the same layers on exactly that input,
against the photos. The tuned weights replace the decoder's when it loads
(`LATENT_GALLERY_DECODER_TUNING`); the fingerprints other learned files are bound to stay the
original decoder's. The files themselves do not change: any SD decoder still reads them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ModelLoadError
from .learned_weights import WEIGHTS, LearnedWeights, made_for
from .models import LatentAutoencoder


def _state(state: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, torch.Tensor]:
    """The decoder's tensors a tuning file holds, by their name in the autoencoder."""
    if not state:
        raise ValueError("no tensors")
    return state


DECODER_TUNINGS = LearnedWeights(
    format="latent-gallery-decoder-tuning-1",
    name="decoder tuning",
    command="python -m codec.training.decoder",
    setting="LATENT_GALLERY_DECODER_TUNING",
    folder=WEIGHTS / "decoder",
    binding=("decoder",),
    build=_state,
)


def decoder_state(model: LatentAutoencoder) -> dict[str, torch.Tensor]:
    """The tensors of `model`'s decoder (those under its `decoder_prefixes`)."""
    return {
        name: tensor
        for name, tensor in model.module.state_dict().items()
        if name.startswith(model.decoder_prefixes)
    }


def save_tuning(tuned: LatentAutoencoder, path: Path, notes: str = "") -> None:
    """Write `tuned`'s decoder weights as a tuning of the decoder it was copied from."""
    DECODER_TUNINGS.save(path, decoder_state(tuned), {**made_for(decoder=tuned), "notes": notes})


def apply_tuning(setting: str, decoder: LatentAutoencoder, folder: Path | None = None) -> bool:
    """Load the tuning `setting` asks for into `decoder` (in place): none (`off`), the file
    made for it in `folder` (by default the shipped one) if there is one (`auto`), or the file at
    a path, which must be. Whether one was loaded."""
    state = DECODER_TUNINGS.resolve(setting, made_for(decoder=decoder), folder)
    if state is None:
        return False
    expected = decoder_state(decoder)
    if state.keys() != expected.keys() or any(
        state[name].shape != expected[name].shape for name in state
    ):
        raise ModelLoadError(
            f"{setting}: its tensors are not this decoder's; write one with "
            f"{DECODER_TUNINGS.command}"
        )
    with decoder.exclusive(), torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(state[name])
    return True
