"""Exported TAPTRv2: ONNX graphs of the per-frame encoder and the per-window decoder
(`export_onnx`), and the model that runs them in ONNX Runtime (`OnnxTAPTRv2`) with the same
window loop, streaming and bounded memory as the PyTorch network.

Both need the optional extra: `pip install taptr[onnx]`.
"""

from taptr.export.manifest import MANIFEST, is_onnx_export
from taptr.export.onnx_export import export_onnx
from taptr.export.onnx_runtime import OnnxTAPTRv2

__all__ = ["MANIFEST", "OnnxTAPTRv2", "export_onnx", "is_onnx_export"]
