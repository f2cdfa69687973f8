"""`taptr app`: a local web page to track points by clicking (Gradio, `pip install "taptr[app]"`).

    from taptr.app import start_app
    with start_app(port=7860) as server:      # binds 127.0.0.1; loads the bundled weights
        print(server.url)                      # open it in a browser
        server.wait()                          # until Ctrl+C

The page: upload a video (or take the demo clip), pick the query frame with the slider, click
the frame to add points (or set a grid size, optionally with a mask), press Track, watch the
overlay and download `tracks.csv`, `tracks.npz` and `tracks.json`. The endpoint `/track` does
the same for programs (`gradio_client`, see `taptr.app.ui.api_track`).

Modules: `settings` (defaults), `core` (reading uploads, drawing queries, tracking to files;
no Gradio), `ui` (the Gradio page), `server` (temporary folder, launch, shutdown). Only `ui` imports Gradio (when
`start_app` runs), so `taptr` works without the extra.
"""

from taptr.app.settings import DEFAULT_HOST, DEFAULT_MAX_FRAMES

__all__ = ["AppServer", "DEFAULT_HOST", "DEFAULT_MAX_FRAMES", "require_gradio", "start_app"]


def __getattr__(name: str):
    # Imported on use: `taptr` builds its command line without loading video I/O or Gradio.
    if name in ("AppServer", "require_gradio", "start_app"):
        from taptr.app import server

        return getattr(server, name)
    raise AttributeError(f"module 'taptr.app' has no attribute {name!r}")
