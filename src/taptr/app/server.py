"""Starting and stopping `taptr app`: a temporary folder for uploads and results, the tracker,
the Gradio server bound to 127.0.0.1 unless asked otherwise.

Everything Gradio stores (uploads, the frames it shows, results) goes to one temporary folder
(`GRADIO_TEMP_DIR` points there while the app runs); files older than an hour are deleted while
it runs, and the whole folder when it stops (`AppServer.close`, or at interpreter exit).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import tempfile
import time
from pathlib import Path

from taptr.app.settings import DEFAULT_HOST, DEFAULT_MAX_FRAMES
from taptr.app.core import forget_uploads
from taptr.errors import TaptrError

logger = logging.getLogger(__name__)

FIRST_PORT = 7860  # without a port: the first free one from here (Gradio's default range)
MAX_UPLOAD = "2gb"
_TEMP_ENV = "GRADIO_TEMP_DIR"


def require_gradio() -> None:
    """Raise a one-line `TaptrError` saying how to install Gradio when it is missing.

    Only looks (Gradio is imported once `GRADIO_TEMP_DIR` points to the app's folder: some of
    its folders are fixed at import)."""
    try:
        found = importlib.util.find_spec("gradio") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise TaptrError('the web app needs Gradio: pip install "taptr[app]"')


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.x.x.x, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AppServer:
    """A running app: `url` to open, `work_dir` holding uploads and results.

    `wait()` blocks until interrupted; `close()` (or leaving the `with` block) stops the server
    and deletes `work_dir`.
    """

    def __init__(self, blocks, url: str, work_dir: tempfile.TemporaryDirectory,
                 previous_temp_env: str | None):
        self.blocks = blocks
        self.url = url
        self._work_dir = work_dir
        self._previous_temp_env = previous_temp_env
        self._closed = False

    @property
    def work_dir(self) -> Path:
        return Path(self._work_dir.name)

    def wait(self) -> None:
        """Block until the server is closed or the process is interrupted (Ctrl+C)."""
        while not self._closed:
            time.sleep(0.2)

    def close(self) -> None:
        """Stop the server and delete the temporary folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.blocks.close(verbose=False)
        finally:
            _restore_temp_env(self._previous_temp_env)
            self._work_dir.cleanup()
            forget_uploads()
            logger.info("taptr app stopped; removed %s", self._work_dir.name)

    def __enter__(self) -> "AppServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def start_app(tracker=None, *, weights=None, device=None, options=None,
              host: str = DEFAULT_HOST, port: int | None = None,
              max_frames: int | None = DEFAULT_MAX_FRAMES,
              tune_allocator: bool = False) -> AppServer:
    """Load the tracker (unless given) and serve the page at http://host:port/ in a background
    thread; returns the running `AppServer`.

    weights/device/options/tune_allocator: as `Tracker.from_pretrained` (None: bundled weights,
    GPU when available, the weights' default tracking options; the allocator left alone).
    port: None picks the first free port from 7860. max_frames: longest video accepted.
    """
    require_gradio()
    if port is not None and not 0 < int(port) < 65536:
        raise TaptrError(f"port must be 1..65535, got {port}")
    if max_frames is not None and max_frames < 1:
        raise TaptrError(f"the frame limit must be at least 1, got {max_frames}")
    if tracker is None:
        from taptr.tracker import Tracker

        tracker = Tracker.from_pretrained(weights, device=device, options=options,
                                          tune_allocator=tune_allocator)
    work_dir = tempfile.TemporaryDirectory(prefix="taptr-app-", ignore_cleanup_errors=True)
    previous = os.environ.get(_TEMP_ENV)
    os.environ[_TEMP_ENV] = work_dir.name  # read by Gradio when building and launching
    try:
        from taptr.app.ui import build_app

        blocks = build_app(tracker, Path(work_dir.name), max_frames)
        blocks.queue(default_concurrency_limit=1)
        try:
            _, url, _ = blocks.launch(
                server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                share=False, inbrowser=False, show_error=False, ssr_mode=False,
                max_file_size=MAX_UPLOAD, favicon_path=None)
        except OSError as error:
            where = f"{host}:{port}" if port else f"{host} (ports {FIRST_PORT}..)"
            reason = "the port is in use" if "empty port" in str(error) else str(error)
            raise TaptrError(f"cannot serve on {where}: {reason} (try another --port)") from None
    except BaseException:
        _restore_temp_env(previous)
        work_dir.cleanup()
        raise
    logger.info("taptr app serving at %s (%s); files in %s", url, tracker, work_dir.name)
    return AppServer(blocks, url, work_dir, previous)


def _restore_temp_env(previous: str | None) -> None:
    if previous is None:
        os.environ.pop(_TEMP_ENV, None)
    else:
        os.environ[_TEMP_ENV] = previous
