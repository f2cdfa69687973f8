"""Defaults of the web app, shared by the command line and the server."""

DEFAULT_HOST = "127.0.0.1"  # this machine only
DEFAULT_MAX_FRAMES = 600  # longest video the page accepts (start option --max-frames)
