"""`taptr export`: write a model as ONNX graphs for the onnxruntime backend.

    taptr export --format onnx --out taptr_onnx/
    taptr export --weights taptrv2.pth --format onnx --out taptrv2_onnx/
    taptr track clip.mp4 --weights taptr_onnx/          # runs in ONNX Runtime

Writes encoder.onnx (per frame), query_features.onnx, templates.onnx (presets with the
correlation update), window.onnx (per window) and the manifest taptr_onnx.json; checks them
against PyTorch before anything appears in --out. Needs the extra: pip install 'taptr[onnx]'.
"""

from __future__ import annotations

import argparse

from taptr.cli.threads import add_threads_option, apply_threads
from taptr.errors import TaptrError

FORMATS = ("onnx",)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model as ONNX graphs (for --backend onnxruntime)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, metavar="NAME|PATH",
                        help="bundled weights name, our .safetensors, or official .pth "
                             "(default: the bundled default weights)")
    parser.add_argument("--format", default="onnx", choices=FORMATS,
                        help="export format (default: onnx)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from taptr.export import export_onnx, is_onnx_export
    from taptr.export.manifest import require_onnxruntime
    from taptr.io.atomic import check_can_create_folder
    from taptr.loading import load_model

    require_onnxruntime(for_export=True)
    apply_threads(args)
    if is_onnx_export(args.weights):
        raise TaptrError(f"{args.weights!r} is already an ONNX export")
    check_can_create_folder(args.out)
    model = load_model(args.weights)
    folder = export_onnx(model, args.out)
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".json"))
    print(f"exported {model.config.name} ({args.format}) to {folder}: {', '.join(files)}")
    return 0
