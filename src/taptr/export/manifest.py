"""What identifies an ONNX export of taptr: the manifest's name and format, and the optional
packages it needs (shared by the writer and the runtime)."""

from __future__ import annotations

from pathlib import Path

from taptr.errors import TaptrError

MANIFEST = "taptr_onnx.json"
FORMAT = "taptr-onnx"
FORMAT_VERSION = 1


def is_onnx_export(path) -> bool:
    """Whether `path` is a folder written by `export_onnx`."""
    return path is not None and (Path(path) / MANIFEST).is_file()


def require_onnxruntime(for_export: bool = False):
    """The `onnxruntime` module (and with `for_export` the `onnx` package that PyTorch's
    exporter writes with), or a `TaptrError` naming the extra to install."""
    try:
        import onnxruntime

        if for_export:
            import onnx  # noqa: F401
    except ImportError:
        what = "ONNX export" if for_export else "the onnxruntime backend"
        raise TaptrError(f"{what} needs the optional extra: pip install 'taptr[onnx]'") from None
    return onnxruntime
