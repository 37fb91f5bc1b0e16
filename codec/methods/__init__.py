"""Registry of quantization methods, by the name users type and the id files store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LatentFileError
from .base import Compressed, QuantizationMethod

if TYPE_CHECKING:
    import numpy as np

    from ..container import LatentFile

_METHODS: dict[str, QuantizationMethod] = {}


def register(method: QuantizationMethod) -> QuantizationMethod:
    """Add a method instance to the registry (module import time)."""
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> QuantizationMethod:
    """The method called `name`; a `ValueError` lists the choices."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(_METHODS)}") from None


def method_by_id(method_id: int) -> QuantizationMethod:
    """The method a file's header names."""
    for method in _METHODS.values():
        if method.id == method_id:
            return method
    raise LatentFileError(f"unknown method id {method_id}")


def dequantize(header: LatentFile) -> np.ndarray:
    """The latent a parsed file holds, dequantized by the method its header names."""
    method = method_by_id(header.method_id)
    return method.decompress(header.params, header.payload, header.latent_shape)


def method_names() -> list[str]:
    """Names of all registered methods."""
    return sorted(_METHODS)


__all__ = [
    "Compressed",
    "QuantizationMethod",
    "get_method",
    "method_by_id",
    "method_names",
    "register",
]

from . import ec, ec1, palette, q8  # noqa: E402, F401  (importing registers the built-in methods)
