"""taptr: TAPTRv2 point tracking in pure PyTorch."""

from taptr.config import ModelConfig, get_preset, PRESETS
from taptr.errors import TaptrError

__version__ = "0.1.0"
__all__ = ["ModelConfig", "get_preset", "PRESETS", "TaptrError", "__version__"]
