"""Build a tracker for evaluation by name: the TAPTRv2 model or a classical baseline."""

from __future__ import annotations

from taptr.errors import TaptrError
from taptr.evaluation.baselines import BASELINES, make_baseline

TRACKER_NAMES = ("taptr", *BASELINES)


def load_tracker(name: str, weights: str | None = None, device: str | None = None,
                 options=None):
    """A tracker with `track(video, queries=...)`.

    name: 'taptr' (the model, `Tracker.from_pretrained(weights, device=..., options=...)`;
    weights is a bundled name, a path or None for the default; options as for `Tracker`) or a
    baseline ('static', 'lk', 'dis', which take neither weights nor options).
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
    return Tracker.from_pretrained(weights, device=device, options=options)
