"""The TAPTRv2 network (pure PyTorch, no I/O)."""

from taptr.models.taptrv2 import TAPTRv2, TrackOutput, build_model
from taptr.models.windows import TrackChunk, TrackStream, window_starts

__all__ = ["TAPTRv2", "TrackOutput", "build_model", "TrackChunk", "TrackStream", "window_starts"]
