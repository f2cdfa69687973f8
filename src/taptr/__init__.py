"""taptr: TAPTRv2 point tracking in pure PyTorch.

    import taptr
    tracker = taptr.Tracker.from_pretrained()
    result = tracker.track("clip.mp4", grid=10)
"""

from taptr.config import PRESETS, ModelConfig, get_preset
from taptr.errors import TaptrError
from taptr.official import load_official
from taptr.weights import load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["Tracker", "TrackResult", "build_model", "load_official", "load_weights",
           "save_weights", "ModelConfig", "get_preset", "PRESETS", "TaptrError", "__version__"]


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
    raise AttributeError(f"module 'taptr' has no attribute {name!r}")
