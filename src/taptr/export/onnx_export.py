"""Write a TAPTRv2 model as ONNX graphs (`taptr export --format onnx`).

The folder holds `encoder.onnx`, `query_features.onnx`, `window.onnx` (and `templates.onnx`
for presets with the correlation update) plus `taptr_onnx.json`, the manifest: the model
config, the memory's level layout and the graph names. `OnnxTAPTRv2` runs it.

Graphs are traced with PyTorch's TorchScript-based ONNX exporter (`torch.onnx.export(...,
dynamo=False)`, opset 17): the window loop stays in Python (`WindowArithmetic`), so each graph
is straight-line code. The model is traced with the `reference` kernels
(`taptr.models.kernels`): bilinear sampling at arbitrary locations is 4-D `grid_sample` (ONNX
`GridSample`, not the fast kernels' weighted `EmbeddingBag`), the correlation windows, whose
samples sit at whole-pixel offsets from an anchor, are integer crops (ONNX `Gather`) blended
by `Lerp`, and the pixel-level NCC is computed by shifted products instead of a grouped
convolution whose group count would depend on the number of points (the same numbers up to
float rounding as the fast kernels). The encoder takes
one frame (its query chunking, which bounds memory, depends on the frame count, so a traced
graph must not see another count); the other graphs have dynamic window length and point
count; the batch is 1.

After writing, every graph is run in ONNX Runtime on inputs of other sizes than the traced
ones and compared with PyTorch, so an export that baked a size in fails here, not later.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch

from taptr.errors import TaptrError
from taptr.export.graphs import EncoderGraph, QueryFeaturesGraph, TemplatesGraph, WindowGraph
from taptr.export.manifest import FORMAT, FORMAT_VERSION, MANIFEST, require_onnxruntime
from taptr.export.onnx_runtime import OnnxTAPTRv2
from taptr.io.atomic import staged_folder
from taptr.models.kernels import prepare_for_inference
from taptr.models.kernels.prepare import fold_frozen_batchnorm

logger = logging.getLogger(__name__)

OPSET = 17
# Window length and point count of the traced examples: sizes no other axis has, so the
# tracer cannot confuse them with a constant.
_TRACE_WINDOW, _TRACE_POINTS = 6, 7
# The check after export: inputs of these sizes; the median absolute difference from PyTorch
# must stay below the tolerance (single points may differ more where a correlation peak is a
# near tie that rounding decides).
_CHECK_WINDOW, _CHECK_POINTS, _EXAMPLE_FRAMES = 5, 11, 3
_CHECK_MEDIAN_TOLERANCE = 1e-4


def export_onnx(model, out_dir: str | os.PathLike, check: bool = True) -> Path:
    """Write `model` (a `TAPTRv2`) as ONNX graphs and a manifest into `out_dir`.

    The model is copied with the reference kernels, batch norms folded (fp32, eval). Files
    appear only when everything succeeded (existing files of the same names are replaced).
    check: run the written graphs in ONNX Runtime against PyTorch (module docstring).
    Returns the folder. Raises `TaptrError` without the `onnx` extra or when the check fails.
    """
    require_onnxruntime(for_export=True)
    prepared = prepare_for_inference(model, "reference").float().eval()
    fold_frozen_batchnorm(prepared.backbone)  # the same function, fewer graph nodes
    examples = _Examples(prepared)
    out_dir = Path(out_dir)
    with staged_folder(out_dir) as staging, torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python number it records; the graphs' sizes that matter
        # are dynamic axes, and the check below runs them at other sizes.
        warnings.simplefilter("ignore")
        graphs = _export_graphs(prepared, examples, staging)
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "opset": OPSET,
            "config": prepared.config.to_dict(),
            "tracking_options": (prepared.default_options.to_dict()
                                 if prepared.default_options is not None else None),
            "layout": [list(shape) for shape in examples.layout.shapes],
            "correlation_levels": examples.levels,
            "graphs": graphs,
            "exported_with": {"torch": torch.__version__},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if check:
            _check(prepared, staging)
    logger.debug("wrote ONNX graphs to %s", out_dir)  # callers name the final folder
    return out_dir


class _Examples:
    """Realistic example inputs for tracing and checking: smooth random frames, their
    features, points inside the image, templates read from the frames."""

    def __init__(self, model):
        self.model = model
        generator = torch.Generator().manual_seed(0)
        height, width = model.config.input_size
        coarse = torch.randn(_EXAMPLE_FRAMES, 3, height // 8, width // 8, generator=generator)
        self.frames = torch.nn.functional.interpolate(coarse, size=(height, width),
                                                      mode="bilinear", align_corners=False)
        with torch.no_grad():
            features = model.encode(self.frames)  # as frame by frame, up to rounding
        self.layout = features.layout
        self.memory = features.memory
        self.maps = features.extras.get("correlation", [])
        self.levels = len(self.maps)
        self.generator = generator

    def points(self, count: int) -> torch.Tensor:
        return 0.1 + 0.8 * torch.rand(1, count, 2, generator=self.generator)

    def query_inputs(self, count: int) -> tuple:
        return self.memory[:1], self.points(count)

    def template_inputs(self, count: int) -> tuple:
        return (self.points(count), *[m[:1] for m in self.maps])

    def window_inputs(self, window: int, count: int) -> tuple:
        config = self.model.config
        frames = torch.arange(window) % len(self.frames)
        points = self.points(count)
        query_frames = torch.randint(0, window, (1, 1, count), generator=self.generator)
        ids = torch.arange(window)[None, :, None]
        tracked, updated = ids >= query_frames, ids > query_frames
        reference = torch.cat((points[:, None].expand(1, window, count, 2)
                               + 0.01 * torch.randn(1, window, count, 2, generator=self.generator),
                               torch.full((1, window, count, 2), 0.5)), -1)
        content = torch.randn(1, window, count, config.hidden_dim, generator=self.generator)
        initial = torch.randn(1, count, config.hidden_dim, generator=self.generator)
        templates = (list(self.model.hooks["correlation"].templates([m[:1] for m in self.maps],
                                                                     points))
                     if self.maps else [])
        return (content, reference, self.memory[frames], tracked, updated, initial,
                *[m[frames] for m in self.maps], *templates)


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index}" for index in range(count)]


def _export_graphs(model, examples: _Examples, folder: Path) -> dict[str, str]:
    """Trace and write every graph; returns {graph: file name}."""
    levels = examples.levels
    maps, templates = _names("map", levels), _names("template", levels)
    graphs = {}

    def export(name, module, args, inputs, outputs, dynamic):
        path = folder / f"{name}.onnx"
        # eval() first: the exporter restores the wrapper's training flag afterwards, and a
        # wrapper left in training mode would switch the model's dropout on.
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          do_constant_folding=True)
        graphs[name] = path.name

    export("encoder", EncoderGraph(model), (examples.frames[:1],), ["frames"], ["memory", *maps],
           None)
    export("query_features", QueryFeaturesGraph(model, examples.layout),
           examples.query_inputs(_TRACE_POINTS), ["memory", "points"], ["content"],
           {"points": {1: "points"}, "content": {1: "points"}})
    if levels:
        export("templates", TemplatesGraph(model), examples.template_inputs(_TRACE_POINTS),
               ["points", *maps], templates,
               {name: {1: "points"} for name in ["points", *templates]})
    per_point = {1: "window", 2: "points"}
    layered = {2: "window", 3: "points"}
    dynamic = {"content": per_point, "reference": per_point, "memory": {0: "window"},
               "tracked": per_point, "updated": per_point, "initial_content": {1: "points"},
               **{name: {0: "window"} for name in maps},
               **{name: {1: "points"} for name in templates},
               "position_logits": layered, "apu_logits": layered, "vis_logits": layered,
               "carried": per_point}
    export("window", WindowGraph(model, examples.layout, levels),
           examples.window_inputs(_TRACE_WINDOW, _TRACE_POINTS),
           ["content", "reference", "memory", "tracked", "updated", "initial_content",
            *maps, *templates],
           ["position_logits", "apu_logits", "vis_logits", "carried"], dynamic)
    return graphs


def _check(model, folder: Path) -> None:
    """Run the written graphs at untraced sizes and compare them with PyTorch."""
    exported = OnnxTAPTRv2(folder, threads=1)
    examples = _Examples(model)
    cases = [("encoder", EncoderGraph(model), (examples.frames[-1:],)),
             ("query_features", QueryFeaturesGraph(model, examples.layout),
              examples.query_inputs(_CHECK_POINTS))]
    if examples.levels:
        cases.append(("templates", TemplatesGraph(model),
                      examples.template_inputs(_CHECK_POINTS)))
    cases.append(("window", WindowGraph(model, examples.layout, examples.levels),
                  examples.window_inputs(_CHECK_WINDOW, _CHECK_POINTS)))
    for name, module, args in cases:
        expected = module.eval()(*args)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = exported.run_graph(name, args)
        for index, (want, have) in enumerate(zip(expected, got)):
            if tuple(want.shape) != tuple(have.shape):
                raise TaptrError(f"ONNX export check failed: {name} output {index} has shape "
                                 f"{tuple(have.shape)}, PyTorch gives {tuple(want.shape)}")
            difference = float((want.float() - have.float()).abs().median())
            if not difference <= _CHECK_MEDIAN_TOLERANCE:
                raise TaptrError(f"ONNX export check failed: {name} output {index} differs "
                                 f"from PyTorch by {difference:.2g} (median)")
