"""The error types the codec raises; everything else is a bug."""


class CodecError(Exception):
    """Base class of every error the codec raises on bad input or configuration."""


class LatentFileError(CodecError, ValueError):
    """A latent file (`.sdz`) is truncated, corrupted, of an unknown version or inconsistent."""


class ImageInputError(CodecError, ValueError):
    """An input image cannot be read, is not an allowed format, or exceeds the pixel limit."""


class SettingsError(CodecError, ValueError):
    """A codec setting no codec can run with; the message starts with the variable's name."""


class ModelLoadError(CodecError, RuntimeError):
    """Model weights cannot be found or loaded; the message names the setting to change."""


class LatentSpaceMismatchError(CodecError, ValueError):
    """A latent file was written in another latent space than the decoder speaks."""
