"""Building and checking query points `(t, x, y)` in pixels of the original video.

A query is valid when every value is finite, `t` is a whole frame index in `0 .. T-1`, and
(x, y) lies inside the frame: `-0.5 <= x <= W - 0.5`, `-0.5 <= y <= H - 0.5` (pixel centres at
integers, so the image covers half a pixel beyond the first and last centres).
"""

from __future__ import annotations

import numpy as np

from taptr import coords
from taptr.errors import TaptrError
from taptr.text import count

MAX_ROWS_NAMED = 5
DEFAULT_GRID = 10


def as_query_array(queries) -> np.ndarray:
    """Queries (array, tensor, list of rows) -> `[N, 3]` float32 (t, x, y)."""
    if hasattr(queries, "detach"):
        queries = queries.detach().cpu().numpy()
    try:
        array = np.asarray(queries, dtype=np.float64)
    except (TypeError, ValueError):
        raise TaptrError("queries must be numbers: rows of (t, x, y)") from None
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]  # a batch of one, as CoTracker takes them
    if array.ndim == 1 and array.size == 3:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 3:
        raise TaptrError(f"queries must be [N, 3] rows of (t, x, y), got shape {array.shape}")
    return array.astype(np.float32)


def validate_queries(queries: np.ndarray, num_frames: int | None,
                     video_size: tuple[int, int]) -> None:
    """Raise `TaptrError` naming the offending rows of `[N, 3]` queries, if any.

    num_frames: the video's length, or None when unknown (live streams: only t >= 0 checked).
    """
    width, height = video_size
    if len(queries) == 0:
        raise TaptrError("no query points given")
    finite = np.isfinite(queries).all(axis=1)
    _refuse(~finite, queries, "contain{s} NaN or infinite values")
    frames = queries[:, 0]
    _refuse(frames != np.round(frames), queries, "ha{ve} a frame index that is not a whole number")
    if num_frames is None:
        _refuse(frames < 0, queries, "ha{ve} a negative frame index")
    else:
        _refuse((frames < 0) | (frames > num_frames - 1), queries,
                f"ha{{ve}} a frame index outside 0..{num_frames - 1} "
                f"(the video has {count(num_frames, 'frame')})")
    outside = ~coords.on_image(queries[:, 1:], (width, height))
    _refuse(outside, queries, f"{{are}} outside the {width}x{height} frame "
                              f"(x in -0.5..{width - 0.5}, y in -0.5..{height - 0.5})")


def _refuse(bad: np.ndarray, queries: np.ndarray, problem: str) -> None:
    """Raise for the rows where `bad`; `problem` has {s}/{ve}/{are} for singular/plural."""
    rows = np.flatnonzero(bad)
    if not len(rows):
        return
    named = ", ".join(f"point {i} (t={_fmt(queries[i, 0])}, x={_fmt(queries[i, 1])}, "
                      f"y={_fmt(queries[i, 2])})" for i in rows[:MAX_ROWS_NAMED])
    more = f" and {len(rows) - MAX_ROWS_NAMED} more" if len(rows) > MAX_ROWS_NAMED else ""
    one = len(rows) == 1
    verb = problem.format(s="s" if one else "", ve="s" if one else "ve", are="is" if one else "are")
    raise TaptrError(f"{count(len(rows), 'query', 'queries')} {verb}: {named}{more}")


def _fmt(value: float) -> str:
    return f"{value:g}"


def grid_queries(grid_size: int, video_size: tuple[int, int], frame: int = 0,
                 mask: np.ndarray | None = None) -> np.ndarray:
    """A `grid_size` x `grid_size` grid of queries on `frame` -> `[N, 3]` float32.

    Points sit at the centres of equal cells, x = (i + 0.5) * W / G - 0.5, so none lies on the
    border. With a boolean `mask` `[H, W]` only points whose nearest pixel is in the mask stay.
    """
    if int(grid_size) != grid_size or grid_size < 1:
        raise TaptrError(f"grid size must be a positive whole number, got {grid_size}")
    grid_size = int(grid_size)
    width, height = video_size
    xs = (np.arange(grid_size) + 0.5) * width / grid_size - 0.5
    ys = (np.arange(grid_size) + 0.5) * height / grid_size - 0.5
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    points = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    if mask is not None:
        columns = np.clip(np.rint(points[:, 0]).astype(int), 0, width - 1)
        rows = np.clip(np.rint(points[:, 1]).astype(int), 0, height - 1)
        points = points[mask[rows, columns]]
        if not len(points):
            raise TaptrError(f"no point of the {grid_size}x{grid_size} grid falls inside the mask")
    frames = np.full((len(points), 1), frame, dtype=np.float64)
    return np.concatenate([frames, points], axis=1).astype(np.float32)


def load_mask(mask, video_size: tuple[int, int]) -> np.ndarray:
    """A mask image path or array -> boolean `[H, W]` at the video's size.

    Non-zero pixels (any channel) are inside. A mask of another size with the same aspect
    ratio (within 1%) is resized (nearest neighbour); any other size is refused.
    """
    width, height = video_size
    if isinstance(mask, (str, bytes)) or hasattr(mask, "__fspath__"):
        mask = read_mask_image(mask)
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.any(axis=-1) if mask.shape[-1] in (1, 3, 4) else mask.any(axis=0)
    if mask.ndim != 2:
        raise TaptrError(f"a mask must be an [H, W] image, got shape {mask.shape}")
    mask = mask.astype(bool)
    if mask.shape == (height, width):
        return mask
    mask_height, mask_width = mask.shape
    if abs(mask_width / mask_height - width / height) > 0.01 * width / height:
        raise TaptrError(f"the mask is {mask_width}x{mask_height} but the video is "
                         f"{width}x{height}")
    rows = ((np.arange(height) + 0.5) * mask_height / height).astype(int)
    columns = ((np.arange(width) + 0.5) * mask_width / width).astype(int)
    rows, columns = np.minimum(rows, mask_height - 1), np.minimum(columns, mask_width - 1)
    return mask[rows[:, None], columns[None, :]]


def read_mask_image(path) -> np.ndarray:
    """A mask image file -> boolean [H, W] (non-zero pixels inside). Raises `TaptrError` for a
    missing or unreadable file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    except FileNotFoundError:
        raise TaptrError(f"no such mask image: {str(path)!r}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise TaptrError(f"cannot read the mask image {str(path)!r} ({error})") from None


def build_queries(video, queries=None, grid: int | None = None, grid_frame: int = 0,
                  mask=None) -> np.ndarray:
    """Explicit queries and/or a grid for `video` (anything with `num_frames` and `size`) ->
    validated `[N, 3]` (t, x, y) pixels: the queries first, then the grid points.

    With neither, a `DEFAULT_GRID` x `DEFAULT_GRID` grid on `grid_frame`.
    """
    if mask is not None and grid is None:
        raise TaptrError("a mask selects grid points: give a grid size as well")
    parts = []
    if queries is not None:
        explicit = as_query_array(queries)
        validate_queries(explicit, video.num_frames, video.size)
        parts.append(explicit)
    if grid is not None or queries is None:
        if not (float(grid_frame).is_integer() and 0 <= grid_frame < video.num_frames):
            raise TaptrError(f"grid frame {grid_frame} is outside 0..{video.num_frames - 1} "
                             f"(the video has {count(video.num_frames, 'frame')})")
        grid_mask = load_mask(mask, video.size) if mask is not None else None
        parts.append(grid_queries(DEFAULT_GRID if grid is None else grid, video.size,
                                  int(grid_frame), grid_mask))
    return np.concatenate(parts, 0)
