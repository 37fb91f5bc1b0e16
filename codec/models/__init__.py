"""Model families that map images to SD latents and back."""

from .autoencoder_kl import KLAutoencoder
from .base import LatentAutoencoder
from .loader import family_of, load_autoencoder
from .taesd import TinyAutoencoder

__all__ = ["KLAutoencoder", "LatentAutoencoder", "TinyAutoencoder", "family_of", "load_autoencoder"]
