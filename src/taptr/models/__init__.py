"""TAPTRv2 point tracking models (pure PyTorch, no I/O). Map of this package (docs/internals.md):

* `taptrv2/`: the paper's network, readable top to bottom (backbone, encoder, decoder with the
  APU, the window loop, the hook interface); plain math, names none of our additions;
* `additions/`: ours (correlation update, template refresh, motion correction, tracking
  initialisation), attached through the hooks;
* `kernels/`: fast kernels, chosen by name (`use_kernels`, `prepare_for_inference`);
* `options.py`: `TrackingOptions`; `build.py`: `build_model`.
"""

from taptr.models.build import build_model
from taptr.models.options import TrackingOptions
from taptr.models.taptrv2.model import TAPTRv2, TrackOutput
from taptr.models.taptrv2.windows import TrackChunk, TrackStream, window_starts

__all__ = ["TAPTRv2", "TrackOutput", "TrackingOptions", "build_model", "TrackChunk",
           "TrackStream", "window_starts"]
