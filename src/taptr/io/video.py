"""Reading videos lazily and writing overlay videos.

`open_video(source)` accepts a video file (anything FFmpeg reads: mp4, mov, avi, webm, mkv,
gif, ...), a folder of images, a uint8 array `[T, H, W, 3]` or a tensor, and returns a
`VideoSource`: frame count, fps and size known up front, frames decoded only when iterated.
Files are read with PyAV (FFmpeg), falling back to OpenCV; phone videos with rotation metadata
come out upright. Every frame is an RGB uint8 array `[H, W, 3]`.

`write_video(path, frames, fps)` writes H.264 MP4 (MPEG-4 Part 2 when no H.264 encoder is
available), WebM, MKV, AVI or GIF, atomically. Where the written file cannot be what was asked
for (an odd size in H.264, a missing encoder, no frame rate), it says so in one warning on this
module's logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from taptr.coords import FrameSize
from taptr.errors import TaptrError
from taptr.io.atomic import atomic_path
from taptr.text import count

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv", ".gif", ".mpg", ".mpeg",
                    ".wmv", ".flv", ".ts", ".3gp")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Frames buffered (after the caller's transform) while reading a file backwards.
DEFAULT_REVERSE_BUFFER_BYTES = 32 * 2**20


class VideoSource:
    """A video read on demand.

    Attributes: `num_frames` (T), `fps` (float or None when unknown), `size` (W, H) of the
    upright frames, `name` (for messages). Subclasses implement `iter_frames`.
    """

    num_frames: int
    fps: float | None
    size: tuple[int, int]
    name: str

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames `start .. stop-1` in order, each `[H, W, 3]` uint8 RGB."""
        raise NotImplementedError

    def iter_frames_reversed(
        self,
        stop: int | None = None,
        transform: Callable[[np.ndarray], object] | None = None,
        buffer_bytes: int = DEFAULT_REVERSE_BUFFER_BYTES,
    ) -> Iterator[object]:
        """`transform(frame)` for frames `stop-1, stop-2, ..., 0` (all frames by default).

        Reads forward segments from the end backwards and buffers one segment of transformed
        frames, at most `buffer_bytes` (at least one frame): memory does not grow with the
        video's length. Pass a transform that shrinks frames (e.g. resize to the network input)
        to make segments long and re-decoding rare.
        """
        stop = self._check_stop(stop)
        transform = transform or (lambda frame: frame)
        segment_stop = stop
        segment_length = 1
        while segment_stop > 0:
            segment_start = max(0, segment_stop - segment_length)
            segment = [transform(frame) for frame in self.iter_frames(segment_start, segment_stop)]
            if len(segment) != segment_stop - segment_start:
                raise TaptrError(f"{self.name}: could not re-read frames "
                                 f"{segment_start}..{segment_stop - 1}")
            yield from reversed(segment)
            segment_stop = segment_start
            segment_length = max(1, buffer_bytes // max(1, _nbytes(segment[0])))
            del segment

    def read_frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames `start .. stop-1` stacked into one `[t, H, W, 3]` array (for short clips)."""
        stop = self._check_stop(stop)
        width, height = self.size
        frames = np.empty((max(stop - start, 0), height, width, 3), np.uint8)
        for i, frame in enumerate(self.iter_frames(start, stop)):
            frames[i] = frame
        return frames

    def close(self) -> None:
        """Release file handles (sources reopen files per iteration, so this is cheap)."""

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        width, height = self.size
        return (f"{type(self).__name__}({self.name!r}, {count(self.num_frames, 'frame')}, "
                f"{width}x{height}, fps={self.fps})")

    def _check_stop(self, stop: int | None) -> int:
        if stop is None:
            return self.num_frames
        if not 0 <= stop <= self.num_frames:
            raise TaptrError(f"{self.name}: frame range end {stop} outside 0..{self.num_frames}")
        return int(stop)


def _nbytes(item) -> int:
    nbytes = getattr(item, "nbytes", None)
    if nbytes is None and hasattr(item, "element_size"):
        nbytes = item.element_size() * item.numel()
    return int(nbytes or 1)


class RandomAccessVideo(VideoSource):
    """A source that reads any frame directly (`frame(index)`): iteration in either direction
    needs no buffering."""

    def frame(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        for index in range(start, self._check_stop(stop)):
            yield self.frame(index)

    def iter_frames_reversed(self, stop=None, transform=None, buffer_bytes=0):
        transform = transform or (lambda frame: frame)
        for index in reversed(range(self._check_stop(stop))):
            yield transform(self.frame(index))


# --------------------------------------------------------------------------- arrays

class ArrayVideo(RandomAccessVideo):
    """Frames held by the caller: a numpy array or torch tensor.

    Accepts `[T, H, W, 3]`, `[T, 3, H, W]` (tensors), `[T, H, W]` grayscale and a leading batch
    axis of size 1. uint8 is used as is; floats are read as 0..1 when their maximum is at most
    1, else as 0..255. Frames are converted one at a time, nothing is copied up front.
    """

    def __init__(self, frames, fps: float | None = None, name: str = "array"):
        frames = _to_numpy_like(frames)
        if frames.ndim == 5 and frames.shape[0] == 1:
            frames = frames[0]
        if frames.ndim == 3:
            frames = frames[..., None]
        if frames.ndim != 4:
            raise TaptrError(f"a video array must be [T, H, W, 3], got shape {tuple(frames.shape)}")
        channels_first = frames.shape[-1] not in (1, 3) and frames.shape[1] in (1, 3)
        self._frames = frames
        self._channels_first = channels_first
        height, width = frames.shape[2:4] if channels_first else frames.shape[1:3]
        channels = frames.shape[1] if channels_first else frames.shape[-1]
        if channels not in (1, 3):
            raise TaptrError(f"a video array needs 3 colour channels, got shape "
                             f"{tuple(frames.shape)}")
        if frames.shape[0] == 0:
            raise TaptrError(f"{name}: the video has no frames")
        self._scale = _float_scale(frames)
        self.num_frames = int(frames.shape[0])
        self.size = FrameSize(int(width), int(height))
        self.fps = fps
        self.name = name

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as `[H, W, 3]` uint8."""
        frame = self._frames[index]
        if hasattr(frame, "detach"):
            frame = frame.detach().cpu().numpy()
        frame = np.asarray(frame)
        if self._channels_first:
            frame = np.moveaxis(frame, 0, -1)
        if self._scale is not None:
            frame = np.clip(np.rint(frame.astype(np.float32) * self._scale), 0, 255)
        frame = frame.astype(np.uint8, copy=False)
        if frame.shape[-1] == 1:
            frame = np.repeat(frame, 3, axis=-1)
        return np.ascontiguousarray(frame)



def _to_numpy_like(frames):
    """numpy arrays and torch tensors pass through (tensors stay tensors); lists become arrays."""
    if hasattr(frames, "detach") or isinstance(frames, np.ndarray):
        return frames
    return np.asarray(frames)


def _float_scale(frames) -> float | None:
    """How to reach 0..255: None for uint8, 255 for floats in 0..1 (and bool), else 1 (clip)."""
    kind = str(frames.dtype).replace("torch.", "")
    if kind == "uint8":
        return None
    if kind == "bool":
        return 255.0
    if "float" in kind and frames.shape[0] and float(frames.max()) <= 1.0:
        return 255.0
    return 1.0


# --------------------------------------------------------------------------- image folders

class ImageFolderVideo(RandomAccessVideo):
    """A folder of images, one per frame, in natural order (frame2 before frame10)."""

    def __init__(self, folder: Path, fps: float | None = None):
        self._paths = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
            key=_natural_key,
        )
        self.name = str(folder)
        if not self._paths:
            raise TaptrError(f"{self.name}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the "
                             "folder")
        first = self._read(self._paths[0])
        self.size = FrameSize(first.shape[1], first.shape[0])
        self.num_frames = len(self._paths)
        self.fps = fps

    def frame(self, index: int) -> np.ndarray:
        path = self._paths[index]
        image = self._read(path)
        if (image.shape[1], image.shape[0]) != self.size:
            raise TaptrError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, the first image "
                             f"is {self.size[0]}x{self.size[1]}; all frames must have one size")
        return image

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise TaptrError(f"{path}: cannot read image ({error})") from None


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


# --------------------------------------------------------------------------- files (PyAV)

@contextlib.contextmanager
def quiet_ffmpeg():
    """FFmpeg's own log lines ("moov atom not found", ...) off while we read a file: the
    problems we handle get our one-line error instead. The previous level is restored."""
    import av

    previous = av.logging.get_level()
    av.logging.set_level(av.logging.PANIC)
    try:
        yield
    finally:
        av.logging.set_level(previous)


def _open_quietly(path: Path):
    """av.open with FFmpeg's log silenced for the opening only (not while a generator that
    decodes from the container is suspended)."""
    import av

    with quiet_ffmpeg():
        return av.open(path.__fspath__())


class PyAVVideo(VideoSource):
    """A video file decoded with PyAV.

    Frame count and presentation timestamps come from one demuxing pass (no decoding), so
    `iter_frames(start, ...)` can seek to the keyframe before `start` instead of decoding from
    the beginning. Frames are indexed in presentation order.
    """

    def __init__(self, path: Path):
        import av

        self.name = str(path)
        self._path = path
        with quiet_ffmpeg(), av.open(str(path)) as container:
            if not container.streams.video:
                raise TaptrError(f"{self.name}: the file has no frames (no video stream)")
            stream = container.streams.video[0]
            timestamps = _presentation_timestamps(container, stream)
            self.fps = _stream_fps(stream)
            container.seek(0)
            first = next(container.decode(stream), None)
            if first is not None and len(set(timestamps)) != len(timestamps):
                timestamps = None  # unusable for seeking: count by decoding, read from the start
                self.num_frames = 1 + sum(1 for _ in container.decode(stream))
        if first is None or timestamps == []:
            raise TaptrError(f"{self.name}: the video has no frames")
        self._rotation = _quarter_turns(getattr(first, "rotation", 0))
        width, height = first.width, first.height
        self.size = FrameSize(height, width) if self._rotation % 2 else FrameSize(width, height)
        self._pts = timestamps
        if timestamps is not None:
            self.num_frames = len(timestamps)
            self._index_of_pts = {pts: i for i, pts in enumerate(timestamps)}

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        import av

        stop = self._check_stop(stop)
        if start >= stop:
            return
        with _open_quietly(self._path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            seekable = start > 0 and self._pts is not None and self._seek(container, stream, start)
            index = -1
            yielded = False
            for frame in container.decode(stream):
                if seekable:
                    index = self._index_of_pts.get(frame.pts, -1)
                    if index < 0 or (index > start and not yielded):
                        # Unknown timestamps, or the seek overshot: decode from the start.
                        yield from self._iter_from_beginning(start, stop)
                        return
                else:
                    index += 1
                if index < start:
                    continue
                yielded = True
                if index >= stop:
                    break
                yield self._to_rgb(frame)
                if index == stop - 1:
                    break

    def _iter_from_beginning(self, start: int, stop: int) -> Iterator[np.ndarray]:
        import av

        with _open_quietly(self._path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index >= stop:
                    break
                if index >= start:
                    yield self._to_rgb(frame)

    def _seek(self, container, stream, start: int) -> bool:
        """Seek to a keyframe at or before frame `start`; False if timestamps are unusable."""
        try:
            container.seek(int(self._pts[start]), stream=stream, backward=True, any_frame=False)
        except Exception:  # noqa: BLE001  (FFmpeg raises several error types)
            return False
        return True

    def _to_rgb(self, frame) -> np.ndarray:
        image = frame.to_ndarray(format="rgb24")
        if self._rotation:
            image = np.ascontiguousarray(np.rot90(image, k=self._rotation))
        return image


def _presentation_timestamps(container, stream) -> list[int]:
    """Sorted pts of the frames the decoder will output (discarded packets excluded).

    Packets without a timestamp get a duplicate one, which marks the list as unusable.
    """
    pts = []
    for packet in container.demux(stream):
        if packet.size == 0 or getattr(packet, "is_discard", False):
            continue
        pts.append(int(packet.pts) if packet.pts is not None else -1)
    pts.sort()
    return pts


def _stream_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            fps = float(rate)
            if 0 < fps < 1000:
                return fps
    return None


def _quarter_turns(rotation) -> int:
    """Display rotation in degrees (counter-clockwise) -> number of np.rot90 turns."""
    try:
        return int(round(float(rotation or 0) / 90.0)) % 4
    except (TypeError, ValueError):
        return 0


# --------------------------------------------------------------------------- files (OpenCV)

class OpenCVVideo(VideoSource):
    """A video file decoded with OpenCV (used when PyAV cannot open it).

    OpenCV applies rotation metadata itself. Frames are counted by grabbing them once.
    """

    def __init__(self, path: Path):
        import cv2

        self.name = str(path)
        self._path = path
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise TaptrError(f"{self.name}: not a video file, or a format this install "
                                 "cannot read")
            count = 0
            while capture.grab():
                count += 1
            fps = capture.get(cv2.CAP_PROP_FPS)
        finally:
            capture.release()
        if count == 0:
            raise TaptrError(f"{self.name}: the video has no frames")
        first = next(self.iter_frames_unchecked(0, 1))
        self.num_frames = count
        self.size = FrameSize(first.shape[1], first.shape[0])
        self.fps = float(fps) if 0 < fps < 1000 else None

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        yield from self.iter_frames_unchecked(start, self._check_stop(stop))

    def iter_frames_unchecked(self, start: int, stop: int) -> Iterator[np.ndarray]:
        import cv2

        capture = cv2.VideoCapture(str(self._path))
        try:
            for _ in range(start):
                capture.grab()
            for _ in range(start, stop):
                ok, frame = capture.read()
                if not ok:
                    break
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


# --------------------------------------------------------------------------- opening

def open_video(source, fps: float | None = None) -> VideoSource:
    """Open a video from a path (file or image folder), an array/tensor, or a `VideoSource`.

    `fps` overrides the file's rate (and gives one to arrays and image folders).
    Raises `TaptrError` with a one-line reason when the source cannot be read.
    """
    if isinstance(source, VideoSource):
        video = source
    elif isinstance(source, (str, os.PathLike)):
        video = _open_path(Path(source))
    else:
        video = ArrayVideo(source)
    if fps is not None:
        if not fps > 0:
            raise TaptrError(f"fps must be positive, got {fps}")
        video.fps = float(fps)
    return video


def _open_path(path: Path) -> VideoSource:
    if not path.exists():
        raise TaptrError(f"no such file or folder: {str(path)!r}")
    if not os.access(path, os.R_OK):
        raise TaptrError(f"{str(path)!r} is not readable (permission denied)")
    if path.is_dir():
        return ImageFolderVideo(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise TaptrError(f"{str(path)!r} is a single image; pass a video or a folder of frames")
    if path.stat().st_size == 0:
        raise TaptrError(f"{str(path)!r} is empty")
    try:
        return PyAVVideo(path)
    except TaptrError:
        raise
    except Exception as error:  # noqa: BLE001  (PyAV raises many FFmpeg error types)
        import av

        if isinstance(error, av.error.InvalidDataError):  # not a container OpenCV could read
            raise TaptrError(f"{str(path)!r} is not a video file, or a format this install "
                             "cannot read") from None
    try:
        return OpenCVVideo(path)
    except TaptrError as error:
        if "no frames" in str(error):
            raise
    raise TaptrError(f"{str(path)!r} is not a video file, or a format this install cannot read")


# --------------------------------------------------------------------------- writing

DEFAULT_FPS = 30.0  # the rate of a written video whose frames have none
# Encoder -> the format it writes, as users know it. H.264 with 4:2:0 colour (what players
# accept) codes only even widths and heights; the other encoders take any size.
_FORMATS = {"libx264": "H.264", "libopenh264": "H.264", "mpeg4": "MPEG-4 Part 2",
            "libvpx-vp9": "VP9", "libvpx": "VP8"}
_EVEN_SIZE_ONLY = ("libx264", "libopenh264")


def write_video(path, frames: Iterable[np.ndarray], fps: float | None = None,
                quality: int = 20) -> str:
    """Write RGB uint8 frames `[H, W, 3]` to `path` atomically; returns the codec used.

    The container follows the extension: .mp4/.mov/.mkv (H.264, falling back to MPEG-4 Part 2
    when this FFmpeg build has no H.264 encoder), .webm (VP9), .avi (MPEG-4), .gif (an adaptive
    256-colour palette per frame).
    `quality` is the H.264/VP9 CRF (lower is better). fps: None (or not positive) writes
    `DEFAULT_FPS`.
    The file keeps the frames' size and the given rate, except where it cannot, and then a
    one-line warning on the `taptr.io.video` logger names the change: H.264 stores only even
    widths and heights, so an odd-sized video gets its last column or row repeated (.webm,
    .avi and .gif keep any size); a missing encoder changes the codec; a missing rate becomes
    `DEFAULT_FPS`.
    """
    path = Path(path)
    extension = path.suffix.lower()
    if not (fps and fps > 0):  # None, 0 or NaN (an image folder or an array)
        logger.warning("%s: the video has no frame rate; written at %g frames/s", path.name,
                       DEFAULT_FPS)
        fps = DEFAULT_FPS
    with atomic_path(path) as temp_path:
        if extension == ".gif":
            return _write_gif(temp_path, frames, fps)
        if extension not in (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"):
            raise TaptrError(f"cannot write video {str(path)!r}: use .mp4, .mov, .mkv, .webm, "
                             ".avi or .gif")
        return _write_with_pyav(temp_path, frames, fps, extension, quality, path.name)


def _video_codecs(extension: str) -> list[tuple[str, dict]]:
    if extension == ".webm":
        return [("libvpx-vp9", {"crf": "{q}", "b": "0"}), ("libvpx", {"crf": "{q}", "b": "1M"})]
    if extension == ".avi":
        return [("mpeg4", {"qscale": "3"})]
    return [("libx264", {"crf": "{q}", "preset": "veryfast"}), ("libopenh264", {}),
            ("mpeg4", {"qscale": "3"})]


def _available_codec(extension: str, quality: int, name: str) -> tuple[str, dict]:
    """The first encoder this FFmpeg build has for `extension` (a warning when its format is
    not the one the extension normally gets)."""
    import av

    candidates = _video_codecs(extension)
    for codec, options in candidates:
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # noqa: BLE001
            continue
        wanted, written = _FORMATS[candidates[0][0]], _FORMATS[codec]
        if written != wanted:
            logger.warning("%s: this FFmpeg build has no %s encoder; written as %s", name,
                           wanted, written)
        return codec, {key: value.format(q=quality) for key, value in options.items()}
    raise TaptrError(f"this FFmpeg build has no encoder for {extension} files")


def _write_with_pyav(path: Path, frames: Iterable[np.ndarray], fps: float, extension: str,
                     quality: int, name: str) -> str:
    import av

    codec, options = _available_codec(extension, quality, name)
    format_name = {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}.get(
        extension, "mp4")
    rate = Fraction(fps).limit_denominator(1001)
    even_only = codec in _EVEN_SIZE_ONLY
    with av.open(str(path), mode="w", format=format_name) as container:
        stream = None
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if stream is None:
                height, width = frame.shape[:2]
                coded = (width + width % 2, height + height % 2) if even_only else (width, height)
                if coded != (width, height):
                    logger.warning(
                        "%s: H.264 stores only even sizes, so the %dx%d video is written as "
                        "%dx%d (last column/row repeated); .webm, .avi or .gif keep the size",
                        name, width, height, *coded)
                stream = container.add_stream(codec, rate=rate, options=options)
                stream.width, stream.height = coded
                stream.pix_fmt = "yuv420p"
            if even_only:
                frame = _even_size(frame)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        if stream is None:
            raise TaptrError(f"no frames to write to {name}")
        for packet in stream.encode():
            container.mux(packet)
    return "h264" if codec in _EVEN_SIZE_ONLY else codec


def _even_size(frame: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by replicating the last row/column (H.264 4:2:0 needs even
    sizes)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


def _write_gif(path: Path, frames: Iterable[np.ndarray], fps: float) -> str:
    """GIF through FFmpeg's encoder, one adaptive 256-colour palette per frame (Pillow)."""
    import av
    from PIL import Image

    with av.open(str(path), mode="w", format="gif") as container:
        stream = None
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if stream is None:
                stream = container.add_stream("gif", rate=Fraction(fps).limit_denominator(100))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "pal8"
            for packet in stream.encode(_palette_frame(frame, av, Image)):
                container.mux(packet)
        if stream is None:
            raise TaptrError(f"no frames to write to {path.name}")
        for packet in stream.encode():
            container.mux(packet)
    return "gif"


def _palette_frame(frame: np.ndarray, av, Image):
    """RGB [H, W, 3] -> a pal8 `av.VideoFrame` with the frame's own 256-colour palette."""
    quantized = Image.fromarray(frame).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    colours = np.asarray(quantized.getpalette()[:768], np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), np.uint8)  # ARGB
    palette[:, 0] = 255
    palette[:len(colours), 1:] = colours
    return av.VideoFrame.from_ndarray((np.asarray(quantized), palette), format="pal8")
