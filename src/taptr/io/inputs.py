"""Finding the videos of a dataset: the inputs of `taptr track` with several paths and of
`Tracker.track_many`.

An input spec is one of:
- a video file (any of `VIDEO_EXTENSIONS`, or any other file FFmpeg may read);
- a folder that directly holds images: one image-sequence video;
- any other folder: searched recursively; every video file is one input, every folder that
  directly holds images is one image-sequence input (its own subfolders are not searched);
  hidden files and folders (name starting with ".") are skipped;
- a glob pattern ("data/**/*.mp4"; `**` crosses folders), quoted so the shell leaves it to us;
- a text file (.txt) of paths, one per line (blank lines and lines starting with "#" are
  skipped; relative paths are relative to the text file's folder). Each line is one video; a
  line naming a missing path becomes an input that fails when it is tracked (a .txt file none
  of whose lines names an existing path is refused: it is no list).

Each input gets a result name: its path relative to its input root (the folder searched, the
fixed folder part of a glob, the deepest folder common to a list's entries, or the parent of a
file given by itself), '/'-separated, without the file extension. Inputs whose names would
collide keep their extension ("a/b.mp4" next to the folder "a/b"); the same file reached twice
is one input.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from taptr.errors import TaptrError
from taptr.io.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

LIST_EXTENSIONS = (".txt",)
_GLOB_CHARACTERS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class VideoInput:
    """One video of a dataset: `path` (a video file or a folder of images) and `name`, where
    its result goes (relative to the output folder, '/'-separated, no extension)."""

    path: Path
    name: str


def is_glob(spec) -> bool:
    """Whether `spec` is a glob pattern (holds *, ? or [) rather than an existing path."""
    return bool(_GLOB_CHARACTERS.search(str(spec))) and not Path(spec).exists()


def holds_images(folder: Path) -> bool:
    """Whether `folder` directly holds at least one image file (then it is one video)."""
    try:
        return any(entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS
                   and not entry.name.startswith(".") for entry in os.scandir(folder))
    except OSError:
        return False


def is_single_video(spec) -> bool:
    """Whether `spec` names one video as `taptr track VIDEO` always took it: a file other than a
    list, a folder of images, or a path that does not exist (and is no glob)."""
    path = Path(spec)
    if is_glob(spec):
        return False
    if path.is_dir():
        return holds_images(path)
    return path.suffix.lower() not in LIST_EXTENSIONS


def find_videos(specs, exclude=()) -> list[VideoInput]:
    """The videos named by `specs` (a spec or a list of specs, see the module docstring), in
    order: specs as given, each folder's videos in natural path order.

    exclude: folders not to search (the output folder, when it lies inside an input folder).
    Raises `TaptrError` (one line) for a spec that names nothing: a missing path, a glob that
    matches no video, a folder without videos, an empty or unreadable list.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    excluded = {Path(folder).resolve() for folder in exclude}
    found: list[tuple[Path, str]] = []
    for spec in specs:
        found.extend(_expand_spec(spec, excluded))
    return _unique_names(found)


def _expand_spec(spec, excluded: set[Path]) -> list[tuple[Path, str]]:
    """(path, name relative to the spec's root) pairs of one spec."""
    path = Path(spec)
    if is_glob(spec):
        return _expand_glob(str(spec), excluded)
    if not path.exists():
        raise TaptrError(f"no such file or folder: {str(spec)!r}")
    if path.is_dir():
        if holds_images(path):
            return [(path, path.resolve().name or "video")]
        videos = _search(path, path, excluded)
        if not videos:
            raise TaptrError(f"{str(spec)!r} holds no videos ({', '.join(VIDEO_EXTENSIONS)}) "
                             "and no folders of images")
        return videos
    if path.suffix.lower() in LIST_EXTENSIONS:
        return _read_list(path)
    return [(path, path.stem)]


def _search(folder: Path, root: Path, excluded: set[Path]) -> list[tuple[Path, str]]:
    """Videos under `folder` (recursively), named relative to `root`."""
    videos = []
    for current, folders, files in os.walk(folder):
        current_path = Path(current)
        folders[:] = sorted((name for name in folders if not name.startswith(".")
                             and (current_path / name).resolve() not in excluded),
                            key=_natural_key)
        kept = []
        for name in folders:
            if holds_images(current_path / name):
                videos.append((current_path / name, _relative_name(current_path / name, root)))
            else:
                kept.append(name)
        folders[:] = kept
        for name in sorted(files, key=_natural_key):
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                videos.append((current_path / name, _relative_name(current_path / name, root)))
    return sorted(videos, key=lambda item: _natural_key(item[1]))


def _expand_glob(pattern: str, excluded: set[Path]) -> list[tuple[Path, str]]:
    """The videos a glob pattern matches: video files, folders of images, other folders
    searched; named relative to the pattern's fixed folder part."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _GLOB_CHARACTERS.search(part):
            break
        fixed.append(part)
    root = Path(*fixed) if fixed else Path(".")
    videos = []
    for match in sorted(glob.glob(pattern, recursive=True), key=_natural_key):
        path = Path(match)
        if any(path.resolve().is_relative_to(folder) for folder in excluded):
            continue
        if path.is_dir():
            if holds_images(path):
                videos.append((path, _relative_name(path, root)))
            else:
                videos.extend(_search(path, root, excluded))
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append((path, _relative_name(path, root)))
    if not videos:
        raise TaptrError(f"no video matches {pattern!r}")
    return videos


def _read_list(path: Path) -> list[tuple[Path, str]]:
    """The entries of a text file of paths, named relative to their deepest common folder."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise TaptrError(f"cannot read the list of videos {str(path)!r}: {reason}") from None
    entries = [line.strip() for line in lines]
    entries = [entry for entry in entries if entry and not entry.startswith("#")]
    if not entries:
        raise TaptrError(f"the list of videos {str(path)!r} names no path")
    paths = [Path(entry) if Path(entry).is_absolute() else path.parent / entry
             for entry in entries]
    if not any(p.exists() for p in paths):
        raise TaptrError(f"{str(path)!r} is not a video file, nor a list of videos (none of "
                         "its lines names an existing file or folder)")
    root = Path(os.path.commonpath([os.path.abspath(p.parent) for p in paths]))
    return [(p, _relative_name(p, root)) for p in paths]


def _relative_name(path: Path, root: Path) -> str:
    """`path` relative to `root`, '/'-separated, without a file's extension."""
    relative = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
    if relative.suffix and not path.is_dir():
        relative = relative.with_suffix("")
    name = relative.as_posix()
    if name in (".", "") or name.startswith("../"):
        name = Path(path).stem or "video"
    return name


def _unique_names(found: list[tuple[Path, str]]) -> list[VideoInput]:
    """Drop repeats of one file; give colliding names their extension; refuse what still
    collides."""
    seen: set[Path] = set()
    unique = []
    for path, name in found:
        key = Path(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            unique.append((path, name))
    counts: dict[str, int] = {}
    for _, name in unique:
        counts[name] = counts.get(name, 0) + 1
    named = []
    for path, name in unique:
        if counts[name] > 1 and path.suffix and not path.is_dir():
            name = f"{name}{path.suffix}"
        named.append(VideoInput(path, name))
    first: dict[str, Path] = {}
    for video in named:
        if video.name in first:
            raise TaptrError(f"{str(first[video.name])!r} and {str(video.path)!r} would both "
                             f"write their result to {video.name!r}; track them in separate "
                             "runs or rename one")
        first[video.name] = video.path
    return named


def _natural_key(text) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]
