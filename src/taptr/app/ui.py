"""The page of `taptr app` (Gradio Blocks) and its `/track` endpoint.

Layout: the video (upload, or "Use the demo clip") beside the query frame, which shows the
chosen points; a slider picks the query frame; clicking the frame adds a point on it; the
points are listed (x removes one); grid size and optional mask; settings (backward tracking,
trail length, occluded points hollow or hidden); Track (with a progress bar); the overlay video
and the track files to download.

Every handler turns a `TaptrError` into a `gr.Error`: the page shows its one-line message and
the server goes on serving. Anything unexpected is logged with its traceback on the server and
shown as one line too.

`/track` (api_name "track", for `gradio_client`): inputs (video file, points "t,x,y;t,x,y",
grid size, 0 for none), outputs (overlay.mp4, tracks.csv); backward tracking on, the overlay
with the default style.
"""

import functools
import html
import logging
import uuid
from pathlib import Path

import gradio as gr
from gradio.themes.utils import fonts

from taptr.app import core
from taptr.errors import TaptrError
from taptr.viz import OCCLUDED_STYLES, OverlayStyle
from taptr.text import count

logger = logging.getLogger(__name__)

TITLE = "taptr: track points by clicking"
# Gradio's default theme with local fonts only: the page works offline.
THEME = gr.themes.Default(font=[fonts.LocalFont("IBM Plex Sans"), "ui-sans-serif",
                                "system-ui", "sans-serif"])
INTRO = ("Upload a video (or use the demo clip), move the slider to the query frame and "
         "**click the frame** to add points there, or set a grid size. Then press **Track**. "
         "Points are (frame, x, y) in pixels of the video.")


def shown_in_page(handler):
    """Decorate a handler: `TaptrError` -> `gr.Error` with its message (file paths of uploads
    shortened to their names); anything unexpected is logged and shown as one line."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except TaptrError as error:
            raise gr.Error(_page_message(str(error), args), print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - the server must keep serving
            logger.exception("taptr app: %s failed", handler.__name__)
            message = f"unexpected error ({type(error).__name__}: {error}); see the server log"
            raise gr.Error(_page_message(message, args), print_exception=False) from None

    return wrapper


def _page_message(message: str, args) -> str:
    """One line, upload paths replaced by file names, escaped (Gradio renders it as HTML)."""
    for value in args:
        if isinstance(value, str) and ("/" in value or "\\" in value):
            message = message.replace(value, Path(value).name)
    return html.escape(" ".join(message.split()), quote=False)


class Handlers:
    """The page's event handlers around one tracker.

    tracker: a `taptr.tracker.Tracker`; work_dir: where results go (one folder per run) and the
    demo clip is written; max_frames: longest video accepted (None: any).
    """

    def __init__(self, tracker, work_dir: Path, max_frames: int | None):
        self.tracker = tracker
        self.work_dir = Path(work_dir)
        self.max_frames = max_frames

    # ------------------------------------------------------------------ video and frame
    @shown_in_page
    def load_video(self, video):
        """A new video: its first frame, the slider's range, its size; points cleared. A video
        that cannot be used leaves the frame empty and says why (beside the video and in a
        pop-up)."""
        empty = (None, gr.Slider(value=0, maximum=1, interactive=False))
        if video is None:
            return *empty, "", _points_update([])
        try:
            source = core.open_upload(video, self.max_frames)
            frame = core.read_frame(source, 0)
        except TaptrError as error:
            message = _page_message(str(error), [video])
            gr.Warning(message)
            return *empty, f"**Cannot use this video:** {message}", _points_update([])
        slider = gr.Slider(value=0, minimum=0, maximum=max(source.num_frames - 1, 1),
                           interactive=source.num_frames > 1)
        return frame, slider, core.describe(source), _points_update([])

    @shown_in_page
    def show_frame(self, video, index, values):
        """Frame `index` with the points drawn."""
        if video is None:
            return None
        return self._frame_with_points(video, index, values)

    @shown_in_page
    def add_point(self, video, index, values, evt: gr.SelectData):
        """A click on the frame at pixel evt.index = (x, y) adds the point (t, x, y)."""
        if video is None:
            raise TaptrError("upload a video first")
        x, y = evt.index[:2]
        value = core.format_point(index or 0, x, y)
        values = list(values or [])
        if value not in values:
            values.append(value)
        return _points_update(values), self._frame_with_points(video, index, values)

    @shown_in_page
    def edit_points(self, video, index, values):
        """The list was edited (a point removed, or all cleared): renumber and redraw."""
        values = list(values or [])
        frame = self._frame_with_points(video, index, values) if video is not None else None
        return _points_update(values), frame

    def clear_points(self, video, index):
        """Remove all points."""
        return self.edit_points(video, index, [])

    def _frame_with_points(self, video, index, values):
        source = core.open_upload(video, self.max_frames)
        index = int(index or 0)
        return core.draw_queries(core.read_frame(source, index),
                                 core.points_to_queries(values), index)

    @shown_in_page
    def use_demo(self):
        """The bundled demo clip as the video."""
        return str(core.write_demo_clip(self.work_dir))

    # ------------------------------------------------------------------ tracking
    @shown_in_page
    def track_page(self, video, values, grid, index, mask, backward, trail, occluded,
                   progress=gr.Progress(track_tqdm=True)):
        """The Track button: overlay video, the three track files, a summary line."""
        points = ";".join(values or [])
        request = core.TrackRequest(video, points, int(grid or 0), int(index or 0), mask,
                                    bool(backward), int(trail), occluded)
        output = self._run(request, progress)
        return str(output.overlay), [str(path) for path in output.files], output.summary

    @shown_in_page
    def api_track(self, video, points, grid, progress=gr.Progress(track_tqdm=True)):
        """Track points through a video.

        Args:
            video: the video file (mp4, mov, webm, mkv, avi, gif, ...).
            points: query points "t,x,y;t,x,y" (frame index, pixel x, y); may be empty when
                grid is set.
            grid: a grid x grid lattice of points on frame 0 (0 for none).

        Returns:
            The overlay video (mp4) and the tracks as CSV (point,frame,x,y,visible,visibility).
        """
        request = core.TrackRequest(video, points, grid if grid is not None else 0)
        output = self._run(request, progress, names=("tracks.csv",))
        return str(output.overlay), str(output.files[0])

    def _run(self, request: core.TrackRequest, progress,
             names=core.TRACK_FILES) -> core.TrackOutput:
        # Gradio deletes what it served an hour later (build_app's delete_cache): write only
        # what is returned.
        folder = self.work_dir / "results" / uuid.uuid4().hex
        return core.track_to_folder(self.tracker, request, folder, self.max_frames,
                                    stage=lambda description: progress(None, desc=description),
                                    names=names)


def _points_update(values: list[str]):
    """The points list showing `values` ("t,x,y"), numbered from 0 as on the frame and in
    the CSV."""
    choices = [(core.point_label(number, value), value) for number, value in enumerate(values)]
    return gr.Dropdown(choices=choices, value=values)


def build_app(tracker, work_dir: Path, max_frames: int | None = core.DEFAULT_MAX_FRAMES,
              delete_after_s: int = 3600) -> gr.Blocks:
    """The page as `gr.Blocks` (not launched). Files Gradio keeps (uploads, results) are
    deleted once they are `delete_after_s` seconds old."""
    handlers = Handlers(tracker, work_dir, max_frames)
    limit = f" at most {count(max_frames, 'frame')}" if max_frames else ""
    with gr.Blocks(title=TITLE, theme=THEME, analytics_enabled=False,
                   delete_cache=(max(60, delete_after_s // 4), delete_after_s)) as blocks:
        gr.Markdown(f"## {TITLE}\n{INTRO}")
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.Video(label=f"Video ({limit.strip() or 'any length'})",
                                 sources=["upload"], elem_id="taptr-video")
                demo = gr.Button("Use the demo clip", size="sm", elem_id="taptr-demo")
                info = gr.Markdown(elem_id="taptr-info")
            with gr.Column(scale=3):
                frame = gr.Image(label="Query frame: click to add a point", type="numpy",
                                 interactive=False, show_download_button=False,
                                 show_fullscreen_button=False, elem_id="taptr-frame")
                index = gr.Slider(0, 1, value=0, step=1, label="Query frame",
                                  interactive=False, elem_id="taptr-frame-index")
        with gr.Row(equal_height=True):
            points = gr.Dropdown(choices=[], value=[], multiselect=True, scale=4,
                                 label="Points (x removes one)", elem_id="taptr-points")
            clear = gr.Button("Clear points", scale=1, elem_id="taptr-clear")
        with gr.Row():
            grid = gr.Slider(0, core.MAX_GRID, value=0, step=1, elem_id="taptr-grid",
                             label="Grid: G x G points on the query frame (0 = none)")
            mask = gr.Image(label="Mask (optional): grid points only where it is not black",
                            type="numpy", image_mode="L", sources=["upload"], height=160,
                            elem_id="taptr-mask")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                backward = gr.Checkbox(True, label="Track backward (frames before each query "
                                                   "frame)", elem_id="taptr-backward")
                trail = gr.Slider(-1, 100, value=OverlayStyle.trail, step=1, elem_id="taptr-trail",
                                  label="Trail length in frames (0 none, -1 all)")
                occluded = gr.Radio(list(OCCLUDED_STYLES), value=OverlayStyle.occluded,
                                    label="Occluded points", elem_id="taptr-occluded")
        track = gr.Button("Track", variant="primary", elem_id="taptr-track")
        with gr.Row():
            overlay = gr.Video(label="Overlay", interactive=False, elem_id="taptr-overlay")
            files = gr.File(label="Tracks", file_count="multiple", interactive=False,
                            elem_id="taptr-files")
        status = gr.Markdown(elem_id="taptr-status")

        page = dict(show_api=False)
        video.change(handlers.load_video, video, [frame, index, info, points], **page)
        demo.click(handlers.use_demo, None, video, **page)
        index.change(handlers.show_frame, [video, index, points], frame, **page)
        frame.select(handlers.add_point, [video, index, points], [points, frame], **page)
        points.input(handlers.edit_points, [video, index, points], [points, frame], **page)
        clear.click(handlers.clear_points, [video, index], [points, frame], **page)
        track.click(handlers.track_page,
                    [video, points, grid, index, mask, backward, trail, occluded],
                    [overlay, files, status], concurrency_id="track", **page)

        with gr.Column(visible=False):  # the programmatic endpoint's own components
            api_video = gr.File(label="video", type="filepath")
            api_points = gr.Textbox(label="points", value="")
            api_grid = gr.Number(label="grid", value=0, precision=0)
            api_overlay = gr.File(label="overlay")
            api_csv = gr.File(label="tracks_csv")
            api_button = gr.Button()
        api_button.click(handlers.api_track, [api_video, api_points, api_grid],
                         [api_overlay, api_csv], api_name="track", concurrency_id="track")
    return blocks
