"""Tracking a whole dataset: many videos, one model load, resumable, split over processes.

- `iter_track(tracker, videos, ...)`: one `VideoOutcome` per video (a `TrackResult`, or the
  one-line reason it failed), in order; a bad video does not stop the others. This is
  `Tracker.track_many`.
- `track_dataset(tracker, videos, out, ...)`: the `taptr track` run over many inputs. Each
  video's files go to `out/<name>/` through `taptr.io.atomic.staged_folder`, then the
  completeness marker `complete.json` is written last (atomically): a folder without it is
  unfinished and is recomputed by the next run; one with it (and the same settings, and
  every file it lists present) is skipped. Under `torchrun` (a `DistributedContext` with
  world size > 1) rank 0 decides what is left to do, rank r tracks items r, r + world, ... of
  that list (each video exactly once, the same split for the same inputs and the same
  finished results), and every rank's records are gathered at the end.
- `write_summary(out, records)`: `summary.csv` and `summary.json` (input, result, status,
  frames, points, seconds, error), atomically.

Status of a video in a run: "tracked" (done now), "skipped" (complete from an earlier run;
frames, points and seconds are those the earlier run recorded), "failed" (with its error).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from taptr.errors import TaptrError
from taptr.io.inputs import VideoInput, find_videos

logger = logging.getLogger(__name__)

MARKER = "complete.json"
SUMMARY_FIELDS = ("input", "result", "status", "frames", "points", "seconds", "error")
STATUSES = ("tracked", "skipped", "failed")


@dataclass
class VideoOutcome:
    """What tracking one video of many gave: `video` (its `VideoInput`), `result` (a
    `TrackResult`, None when it failed), `error` (the one-line reason, None on success) and
    `seconds` (wall time of opening and tracking it)."""

    video: VideoInput
    result: object = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SaveOptions:
    """What `track_dataset` writes per video: `files` (track files, by extension: .npz, .csv,
    .json) and the overlay video (`overlay`: None for none, else a dict of `save_overlay`
    keywords)."""

    files: tuple[str, ...] = ("tracks.npz", "tracks.csv")
    overlay: dict | None = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.files) + (["overlay.mp4"] if self.overlay is not None else [])


def as_inputs(videos, exclude=()) -> list[VideoInput]:
    """`VideoInput`s from a spec (path, folder, glob, list file), a list of specs, or a list of
    `VideoInput`s (see `taptr.io.inputs`). Raises `TaptrError` for a spec naming nothing."""
    if isinstance(videos, (str, Path)) or hasattr(videos, "__fspath__"):
        videos = [videos]
    videos = list(videos)
    if all(isinstance(video, VideoInput) for video in videos):
        return videos
    if any(isinstance(video, VideoInput) for video in videos):
        raise TaptrError("give either paths or VideoInputs, not both")
    return find_videos(videos, exclude)


def one_line(error: BaseException) -> str:
    """An exception as one line: our message as it is, anything else with its type."""
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, TaptrError):
        return message or "error"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def iter_track(tracker, videos: Iterable[VideoInput], track_kwargs: dict | None = None,
               progress: bool = True, description: str = "videos") -> Iterator[VideoOutcome]:
    """Track each video with `tracker` (a `Tracker`), yielding a `VideoOutcome` per video in
    order. track_kwargs: keywords of `Tracker.track` (queries, grid, mask, ...), the same for
    every video. A video that cannot be read or tracked (unreadable, empty, queries outside
    it, a mask of the wrong size...) yields its error and the others go on; Ctrl-C stops."""
    from tqdm.auto import tqdm

    from taptr.io.video import open_video

    videos = list(videos)
    track_kwargs = dict(track_kwargs or {})
    with tqdm(total=len(videos), unit="video", desc=description, disable=not progress,
              file=sys.stderr, leave=False) as bar:
        for video in videos:
            bar.set_postfix_str(video.name[-40:], refresh=False)
            started = time.perf_counter()
            try:
                source = open_video(video.path)
                result = tracker.track(source, progress=progress, **track_kwargs)
            except Exception as error:  # noqa: BLE001 - one bad video must not stop the run
                outcome = VideoOutcome(video, None, one_line(error),
                                       time.perf_counter() - started)
                logger.warning("%s failed: %s", video.name, outcome.error)
            else:
                outcome = VideoOutcome(video, result, None, time.perf_counter() - started)
            bar.update(1)
            yield outcome


# ---------------------------------------------------------------------- result folders

def read_marker(folder: Path) -> dict | None:
    """The completeness marker of a result folder, None when absent or unreadable."""
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(folder: Path, settings: dict) -> bool:
    """Whether `folder` holds a finished result made with `settings`: the marker is there,
    records the same settings, and every file it lists exists."""
    marker = read_marker(folder)
    if not isinstance(marker, dict) or marker.get("settings") != _jsonable(settings):
        return False
    files = marker.get("files")
    return isinstance(files, list) and all((folder / name).is_file() for name in files)


def save_result(folder: Path, outcome: VideoOutcome, save: SaveOptions,
                settings: dict) -> dict:
    """Write a video's files into `folder` (staged: all or nothing), then the marker; returns
    the marker's record. Raises `TaptrError` when the folder cannot be written."""
    from taptr.io.atomic import make_folder, staged_folder, write_text_atomic

    result = outcome.result
    # The parents first, for good: processes writing neighbouring results at the same time
    # would otherwise race in each other's probes, which create and remove missing folders.
    make_folder(folder.parent)
    with staged_folder(folder) as staging:
        for name in save.files:
            result.save(staging / name)
        if save.overlay is not None:
            result.save_overlay(staging / "overlay.mp4", **save.overlay)
    record = {"input": str(outcome.video.path), "result": outcome.video.name,
              "frames": result.num_frames, "points": result.num_points,
              "seconds": round(outcome.seconds, 3), "files": save.names,
              "settings": _jsonable(settings)}
    write_text_atomic(folder / MARKER, json.dumps(record, indent=1) + "\n")
    return record


def _jsonable(value):
    return json.loads(json.dumps(value))


def file_digest(path) -> str:
    """sha256 of a file's bytes (settings name query and mask files by content)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- a whole run

def track_dataset(tracker, videos: list[VideoInput], out, *, track_kwargs: dict | None = None,
                  save: SaveOptions | None = None, settings: dict | None = None,
                  context=None, progress: bool = True) -> list[dict]:
    """Track `videos` into `out/<name>/`, skipping complete results; returns every video's
    summary record (SUMMARY_FIELDS), in input order, on every rank.

    context: a `taptr.distributed.DistributedContext` (None: one process). Every rank must be
    given the same videos (checked: a `TaptrError` on every rank otherwise). settings: what the
    result depends on (weights, queries, options...), stored in each marker; a result made
    with other settings is recomputed.
    """
    from taptr.distributed import DistributedContext

    context = context or DistributedContext()
    save = save or SaveOptions()
    settings = settings or {}
    out = Path(out)
    names = [video.name for video in videos]
    digests = context.gather(hashlib.sha256("\n".join(
        f"{v.path}\t{v.name}" for v in videos).encode()).hexdigest())
    if len(set(digests)) > 1:
        raise TaptrError("the processes found different inputs (is every machine given the "
                         "same paths, on a shared file system?)")

    # Rank 0 alone looks at what is finished, so every rank splits the same list.
    plan = None
    if context.is_main:
        plan = {"pending": [], "skipped": {}}
        for index, video in enumerate(videos):
            folder = out / video.name
            if is_complete(folder, settings):
                plan["skipped"][index] = read_marker(folder)
            else:
                plan["pending"].append(index)
    plan = context.gather(plan)[0]
    mine = [index for position, index in enumerate(plan["pending"]) if context.takes(position)]

    records = []
    description = "videos" if not context.enabled else f"videos (rank 0 of {context.world_size})"
    outcomes = iter_track(tracker, [videos[i] for i in mine], track_kwargs,
                          progress=progress and context.is_main, description=description)
    for index, outcome in zip(mine, outcomes):
        folder = out / outcome.video.name
        if outcome.ok:
            try:
                (folder / MARKER).unlink(missing_ok=True)  # a stale result is unfinished now
                save_result(folder, outcome, save, settings)
            except Exception as error:  # noqa: BLE001 - record it, go on with the others
                outcome.error = f"writing the result: {one_line(error)}"
                logger.warning("%s failed: %s", outcome.video.name, outcome.error)
        records.append((index, _summary_record(outcome)))

    for index, marker in plan["skipped"].items():
        video = videos[int(index)]
        records.append((int(index), {
            "input": str(video.path), "result": video.name, "status": "skipped",
            "frames": marker.get("frames"), "points": marker.get("points"),
            "seconds": marker.get("seconds"), "error": ""}))
    records = context.gather_lists(records)
    merged = [record for _, record in sorted(records, key=lambda pair: pair[0])]
    if [record["result"] for record in merged] != names:
        raise TaptrError("internal error: the processes' records do not cover every input once")
    return merged


def _summary_record(outcome: VideoOutcome) -> dict:
    result = outcome.result
    return {"input": str(outcome.video.path), "result": outcome.video.name,
            "status": "tracked" if outcome.ok else "failed",
            "frames": result.num_frames if result is not None else None,
            "points": result.num_points if result is not None else None,
            "seconds": round(outcome.seconds, 3), "error": outcome.error or ""}


def write_summary(out, records: list[dict], extra: dict | None = None) -> list[Path]:
    """`out/summary.csv` (one row per video, SUMMARY_FIELDS) and `out/summary.json` (counts
    per status, `extra`, and the rows); atomic. Returns the two paths."""
    from taptr.io.atomic import write_text_atomic

    out = Path(out)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: "" if record.get(key) is None else record[key]
                         for key in SUMMARY_FIELDS})
    counts = {status: sum(r["status"] == status for r in records) for status in STATUSES}
    summary = {"videos": len(records), **counts, **(extra or {}), "per_video": records}
    return [write_text_atomic(out / "summary.csv", text.getvalue()),
            write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")]
