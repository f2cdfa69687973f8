"""TAP-Vid evaluation: exact metrics, the evaluation loop and classical baselines.

* `compute_tapvid_metrics`: tapnet's metric (`taptr.evaluation.metrics`).
* `taptr.evaluation.evaluate.evaluate` / `EvalProtocol`: the loop behind `taptr eval`.
* `taptr.evaluation.trackers`: `PointTracker`, what the loop needs of a tracker (`taptr.Tracker`
  and the baselines are ones), and `load_tracker` by name.
* `taptr.evaluation.baselines`: the `static`, `lk` and `dis` trackers (`make_baseline`).
* `taptr.evaluation.datasets`: query sampling and resizing; pickle I/O is `taptr.data.tapvid`.
* `taptr.evaluation.toydata`: tiny generated TAP-Vid videos for tests and smoke runs.
"""

from taptr.evaluation.metrics import METRIC_NAMES, compute_tapvid_metrics

__all__ = ["METRIC_NAMES", "compute_tapvid_metrics"]
