"""Presenting evaluation results: the printed table, the JSON and per-video CSV files.

Files are written through `taptr.io.atomic` (a temporary file in the same directory, then
`os.replace`), so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence

from taptr.evaluation.metrics import METRIC_NAMES, THRESHOLDS
from taptr.io.atomic import check_can_write_file, write_text_atomic
from taptr.text import count

#: (column title, result key) of the printed table; metrics are shown in percent.
TABLE_COLUMNS = (
    ("AJ", "average_jaccard"),
    ("d_avg", "average_pts_within_thresh"),
    ("OA", "occlusion_accuracy"),
    *((f"d<{delta}", f"pts_within_{delta}") for delta in THRESHOLDS),
)
PER_VIDEO_FIELDS = ("name", "num_frames", "width", "height", "num_queries", *METRIC_NAMES, "seconds")


def check_writable(path: str | os.PathLike | None) -> None:
    """Fail early (before a long evaluation) when `path` cannot be written (None: no file);
    `taptr.io.atomic.check_can_write_file`."""
    if path is not None:
        check_can_write_file(path)


def _json_safe(value):
    """NaN/inf -> None so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: str | os.PathLike, results: Mapping) -> None:
    """The whole result dict (protocol, means, per-video records) as JSON."""
    write_text_atomic(path, json.dumps(_json_safe(results), indent=2) + "\n")


def write_per_video_csv(path: str | os.PathLike, records: Sequence[Mapping]) -> None:
    """One row per video: name, sizes, number of queries, every metric, seconds."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PER_VIDEO_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow(record)
    write_text_atomic(path, buffer.getvalue())


def format_table(results: Mapping) -> str:
    """The protocol line and one row of numbers (percent) plus tracker seconds."""
    protocol = results["protocol"]
    scale = "x255" if protocol["scale_255"] else "x256"
    header = (
        f"tracker={protocol['tracker']} weights={protocol['weights']} "
        f"mode={protocol['query_mode']} resolution={protocol['resolution']} scale={scale} "
        f"pad_queries={protocol['pad_queries'] if protocol['pad_queries_applied'] else None} "
        f"videos={results['num_videos']}"
    )
    titles = [title for title, _ in TABLE_COLUMNS] + ["seconds"]
    values = [f"{100 * results['metrics'][key]:.2f}" for _, key in TABLE_COLUMNS]
    values.append(f"{results['seconds']:.1f}")
    widths = [max(len(title), len(value)) for title, value in zip(titles, values)]
    title_row = "  ".join(title.rjust(width) for title, width in zip(titles, widths))
    value_row = "  ".join(value.rjust(width) for value, width in zip(values, widths))
    lines = [header, title_row, value_row]
    if results.get("skipped_videos"):
        skipped = count(len(results["skipped_videos"]), "video")
        lines.append(f"skipped {skipped} without any query")
    return "\n".join(lines)
