"""`OnnxTAPTRv2`: an exported TAPTRv2 run by ONNX Runtime (`Tracker(..., backend="onnxruntime")`).

It offers what a `TrackStream` asks of a model (`WindowArithmetic`): the per-frame encoder,
the query features, the correlation templates and the layers of a window run as ONNX graphs;
the window loop itself (which frames form a window, how states are kept, carried over and
freed) is the same Python code as for the PyTorch network, so streaming, online tracking and
bounded memory behave identically. CPU only, fp32. It is a `taptr.model_io.StreamModel`
(`config`, `device`, `stream`), which is all `Tracker` and the online tracker ask of a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from taptr.config import ModelConfig
from taptr.errors import TaptrError
from taptr.export.manifest import FORMAT, FORMAT_VERSION, MANIFEST, require_onnxruntime
from taptr.models.additions.correlation_update import correlation_session
from taptr.models.additions.flow_prior import FlowPrior
from taptr.models.additions.motion_correction import MotionCorrection
from taptr.models.options import TrackingOptions
from taptr.models.taptrv2.levels import LevelLayout
from taptr.models.taptrv2.model import FrameFeatures, WindowArithmetic, WindowLayers


class OnnxTAPTRv2(WindowArithmetic):
    """A TAPTRv2 model from a folder written by `export_onnx`.

    folder: the export (with `taptr_onnx.json`). threads: intra-op threads of each graph
    (None: PyTorch's current thread count, so `--threads` applies to both backends).
    Tensors in and out are torch tensors on the CPU (float32), with the shapes of the
    `TAPTRv2` methods of the same names. Raises `TaptrError` for a folder that is not an
    export, an unsupported format version, or without the `onnx` extra.
    """

    backend = "onnxruntime"
    training = False

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        onnxruntime = require_onnxruntime()
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not manifest_path.is_file():
            raise TaptrError(f"not an ONNX export of taptr (no {MANIFEST}): {str(folder)!r}")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as error:
            raise TaptrError(f"unreadable {manifest_path}: {error}") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise TaptrError(f"{manifest_path} is format {manifest.get('format')!r} version "
                             f"{manifest.get('version')!r}; this taptr reads {FORMAT!r} "
                             f"version {FORMAT_VERSION}")
        self.config = ModelConfig.from_dict(manifest["config"])
        stored = manifest.get("tracking_options")
        self.default_options = (TrackingOptions.from_dict(stored) if stored is not None
                                else TrackingOptions.from_legacy_config(manifest["config"]))
        self.layout = LevelLayout.from_shapes(manifest["layout"])
        self.correlation_levels = int(manifest["correlation_levels"])
        # The hooks the window loop calls (their layer computations are in the window graph).
        self.hooks = {"flow_prior": FlowPrior(self.config.input_size),
                      "motion_correction": MotionCorrection(self.config.input_size)}
        if self.correlation_levels:
            self.hooks["correlation"] = _CorrelationGraphs(self)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.sessions = {}
        for name, file_name in manifest["graphs"].items():
            path = self.folder / file_name
            if not path.is_file():
                raise TaptrError(f"the ONNX export {str(folder)!r} lacks {file_name}")
            try:
                self.sessions[name] = onnxruntime.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"])
            except Exception as error:  # onnxruntime raises its own exception types
                raise TaptrError(f"cannot load {path}: {error}") from None

    def __repr__(self) -> str:
        return f"OnnxTAPTRv2({self.config.name}, {str(self.folder)!r})"

    # ------------------------------------------------------------------ what the stream needs
    @property
    def device(self) -> torch.device:
        """Always the CPU: `Tracker(..., device="cuda", backend="onnxruntime")` is refused."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def run_graph(self, name: str, inputs) -> list[torch.Tensor]:
        """Run graph `name` on tensors given in its input order; returns its outputs."""
        session = self.sessions[name]
        feed = {spec.name: _as_numpy(value) for spec, value in zip(session.get_inputs(), inputs)}
        return [torch.from_numpy(output) for output in session.run(None, feed)]

    def encode(self, frames: torch.Tensor, hooks=None) -> FrameFeatures:
        """frames [F, 3, H_in, W_in] normalised -> `FrameFeatures` (as `TAPTRv2.encode`); the
        encoder graph takes one frame at a time (and always computes every hook's features)."""
        per_frame = [self.run_graph("encoder", (frame[None],)) for frame in frames]
        memory = torch.cat([outputs[0] for outputs in per_frame])
        maps = [torch.cat([outputs[level] for outputs in per_frame])
                for level in range(1, len(per_frame[0]))]
        extras = {"correlation": maps} if maps else {}
        if hooks is None or "flow_prior" in hooks:  # computed here, outside the graphs
            extras["flow_prior"] = self.hooks["flow_prior"].frame_features(frames, [])
        return FrameFeatures(memory, self.layout, extras)

    def query_features(self, memory: torch.Tensor, layout: LevelLayout,
                       points: torch.Tensor) -> torch.Tensor:
        """memory [1, S, C], points [1, N, 2] -> initial content [1, N, C]."""
        return self.run_graph("query_features", (memory, points))[0]

    def decode_window_layers(self, inputs, initial_content: torch.Tensor,
                             point_chunk: int | None = None) -> WindowLayers:
        """One window's layers (as `TAPTRv2.decode_window_layers`; `point_chunk` is not
        needed: ONNX Runtime plans the graph's memory itself)."""
        if inputs.content.shape[0] != 1:
            raise TaptrError("the onnxruntime backend tracks one video at a time (batch 1)")
        extra = inputs.hook_inputs.get("correlation", [])
        outputs = self.run_graph("window", (inputs.content, inputs.reference, inputs.memory,
                                            inputs.tracked, inputs.updated, initial_content,
                                            *extra))
        return WindowLayers(*outputs)


class _CorrelationGraphs:
    """The correlation hook of an export: templates from the `templates` graph; sessions as
    the PyTorch hook's (`correlation_session`)."""

    name = "correlation"

    def __init__(self, model: OnnxTAPTRv2):
        self.model = model

    def templates(self, maps: list[torch.Tensor], points: torch.Tensor) -> list[torch.Tensor]:
        """One frame's correlation maps, points [1, N, 2] -> per level [1, N, C_l]."""
        return self.model.run_graph("templates", (points, *maps))

    def start(self, options):
        return correlation_session(self, options)


def _as_numpy(value: torch.Tensor) -> np.ndarray:
    """A contiguous numpy view of a CPU tensor (float tensors as float32)."""
    value = value.detach()
    if value.is_floating_point():
        value = value.float()
    return np.ascontiguousarray(value.cpu().numpy())
