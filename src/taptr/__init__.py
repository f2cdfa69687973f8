"""taptr: TAPTRv2 point tracking in pure PyTorch.

    import taptr
    tracker = taptr.Tracker.from_pretrained()        # or a registered name, or a path
    result = tracker.track("clip.mp4", grid=10)

Named models live in one registry (`taptr.models.registry`: `list_models`, `register`,
`get_preset`); `load_model(name_or_path)` is the one loader and `create_model(name,
pretrained=...)` builds a registered model (`taptr.loading`).
"""

from taptr.config import ModelConfig
from taptr.errors import TaptrError
from taptr.loading import create_model, load_model
from taptr.models.registry import get_preset, list_models, register
from taptr.official import load_official
from taptr.weights import load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["Tracker", "TrackResult", "build_model", "create_model", "load_model", "list_models",
           "register", "load_official", "load_weights", "save_weights", "ModelConfig",
           "get_preset", "PRESETS", "TaptrError", "__version__"]


def __getattr__(name: str):
    # The tracker pulls in video I/O (PyAV, OpenCV): import it only when asked for, so that
    # training and conversion run where those libraries are absent.
    if name == "Tracker":
        from taptr.tracker import Tracker

        return Tracker
    if name == "TrackResult":
        from taptr.result import TrackResult

        return TrackResult
    if name == "build_model":
        from taptr.models import build_model

        return build_model
    if name == "PRESETS":
        # Kept for code written before the registry: preset name -> config factory.
        from taptr.models import registry

        entries = [registry.get_entry(name) for name in registry.list_models()]
        return {e.name: e.config_factory for e in entries if e.preset == e.name}
    raise AttributeError(f"module 'taptr' has no attribute {name!r}")
