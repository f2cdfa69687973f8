"""What the evaluation needs of a tracker (`PointTracker`), and building one by name: the
TAPTRv2 model or a classical baseline."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from taptr.errors import TaptrError
from taptr.evaluation.baselines import BASELINES, make_baseline

TRACKER_NAMES = ("taptr", *BASELINES)


@runtime_checkable
class TrackOutput(Protocol):
    """A tracker's result: tracks [N, T, 2] (x, y) pixels and visible [N, T] bool (numpy
    arrays or tensors)."""

    tracks: object
    visible: object


@runtime_checkable
class PointTracker(Protocol):
    """A tracker `taptr.evaluation.evaluate.evaluate` can score (`taptr.Tracker` and the
    baselines of `taptr.evaluation.baselines` are ones).

    track(video uint8 [T, H, W, 3], queries [N, 3] rows (t, x, y) in pixels of `video`,
    pad_queries, progress) -> `TrackOutput`. pad_queries: pad each pass to this many queries
    (the official TAPTR evaluation's 800; 0: none), honoured where `supports_query_padding`
    is True; progress: whether the tracker may show its own progress bar (the evaluation
    shows one per video and passes False).
    """

    supports_query_padding: bool

    def track(self, video, queries, pad_queries: int = 0,
              progress: bool = True) -> TrackOutput: ...


def load_tracker(name: str, weights: str | None = None, device: str | None = None,
                 options=None, tune_allocator: bool = False) -> PointTracker:
    """A `PointTracker` by name.

    name: 'taptr' (the model, `Tracker.from_pretrained(weights, device=..., options=...,
    tune_allocator=...)`; weights is a bundled name, a path or None for the default; options
    as for `Tracker`) or a baseline ('static', 'lk', 'dis', which take neither weights nor
    options and run on the CPU).
    """
    if name in BASELINES:
        if weights is not None:
            raise TaptrError(f"--weights applies to --tracker taptr, not to {name!r}")
        if options is not None:
            raise TaptrError(f"tracking options apply to --tracker taptr, not to {name!r}")
        return make_baseline(name)
    if name != "taptr":
        raise TaptrError(f"unknown tracker {name!r} (expected one of {', '.join(TRACKER_NAMES)})")
    try:
        from taptr.tracker import Tracker
    except ImportError as error:
        raise TaptrError(f"--tracker taptr is unavailable: cannot import taptr.tracker ({error})") from None
    return Tracker.from_pretrained(weights, device=device, options=options,
                                   tune_allocator=tune_allocator)
