"""taptr: TAPTRv2 point tracking in pure PyTorch."""

from taptr.config import ModelConfig, get_preset, PRESETS
from taptr.errors import TaptrError
from taptr.official import load_official
from taptr.weights import load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["load_official", "load_weights", "save_weights", "ModelConfig", "get_preset", "PRESETS", "TaptrError", "__version__"]
