"""`taptr app`: a local web page to track points by clicking (pip install "taptr[app]").

    taptr app                          # http://127.0.0.1:7860 (first free port from 7860)
    taptr app --port 8000 --device cuda
    taptr app --host 0.0.0.0           # reachable from other machines: no login, use with care

Upload a video (or use the demo clip), click the frame to add points (or set a grid), press
Track, download tracks.csv/.npz/.json. Programs can call the endpoint "/track" with
gradio_client. Uploads and results live in a temporary folder deleted when the app stops.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from taptr.cli.threads import add_threads_option, apply_threads
from taptr.errors import TaptrError


def register(subparsers) -> None:
    from taptr.app import DEFAULT_HOST, DEFAULT_MAX_FRAMES

    parser = subparsers.add_parser(
        "app", help="a local web page: click points on a video and track them",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=None, metavar="P",
                        help="port (default: the first free one from 7860)")
    parser.add_argument("--host", default=DEFAULT_HOST, metavar="H",
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only; "
                             "0.0.0.0 for every network interface)")
    parser.add_argument("--weights", default=None, metavar="NAME|PATH",
                        help="bundled weights name, our .safetensors, or official .pth "
                             "(default: the bundled default weights)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES, metavar="N",
                        help=f"refuse longer videos (default {DEFAULT_MAX_FRAMES}; 0: no limit)")
    add_threads_option(parser)
    from taptr.cli import tracking_options

    tracking_options.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from taptr.app import require_gradio, start_app
    from taptr.app.server import is_loopback
    from taptr.cli.tracking_options import option_changes

    options = option_changes(args)
    require_gradio()  # before the slow model load
    apply_threads(args)
    if args.max_frames < 0:
        raise TaptrError(f"--max-frames must not be negative, got {args.max_frames}")
    if not is_loopback(args.host):
        print(f"taptr app: warning: --host {args.host} makes the page reachable from other "
              "machines; it has no login, so anyone who reaches it can upload videos and use "
              "this machine's processor", file=sys.stderr)
    with _sigterm_as_interrupt():
        server = start_app(weights=args.weights, device=args.device, options=options,
                           host=args.host, port=args.port, max_frames=args.max_frames or None,
                           tune_allocator=True)
        try:
            print(f"taptr app: open {server.url} in a browser (Ctrl+C stops it)")
            print(f"taptr app: uploads and results in {server.work_dir} (deleted on exit)",
                  flush=True)
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
    print("taptr app: stopped")
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (e.g. `kill`) stops the server like Ctrl+C, so the temporary folder is removed."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
