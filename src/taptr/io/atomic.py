"""Atomic file writes, the one implementation every writer uses (tracks, overlays, reports,
weights, checkpoints, datasets): write next to the target, flush it to disk, then `os.replace`,
so a reader (or a crash) never sees a half-written output."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from taptr.errors import TaptrError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success move it onto `path`.

    The temporary name keeps the target's extension (writers that pick a format from the
    extension still work). On any exception the temporary file is removed and `path` is left
    as it was.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    ensure_writable_folder(folder)
    temp_path = _create_unique(folder, target)
    try:
        yield temp_path
        _flush_to_disk(temp_path)
        _default_permissions(temp_path)
        os.replace(temp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp_path.unlink()
        raise


def _flush_to_disk(path: Path) -> None:
    """fsync a written file, so the rename cannot land before its content (power loss)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _default_permissions(path: Path) -> None:
    """The mode a newly created file gets (0666 minus the umask): some writers (safetensors)
    replace our temporary file with one of mode 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _create_unique(folder: Path, target: Path) -> Path:
    """Create an empty, uniquely named file next to `target` (mode 0666 minus the umask)."""
    for _ in range(100):
        candidate = folder / f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}"
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        except OSError as error:
            raise TaptrError(f"cannot write to {str(folder)!r}: {error.strerror}") from None
        return candidate
    raise TaptrError(f"cannot create a temporary file in {str(folder)!r}")


def ensure_writable_folder(folder: str | os.PathLike) -> None:
    """Raise `TaptrError` unless `folder` is an existing, writable directory."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TaptrError(f"output folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TaptrError(f"output folder {str(folder)!r} is not writable")


def check_can_create_folder(folder: str | os.PathLike) -> None:
    """Raise `TaptrError` (one line, with the system's reason) unless `folder` can hold output.

    Used to refuse a bad output location before any work is done. It creates the missing
    folders and a probe file inside `folder`, as the real output will, then removes what it
    created: permission bits and `os.access` do not tell (root may "write" to /proc, where
    nothing can be created; a read-only mount; a path through a file).
    """
    _probe_folder(Path(folder).absolute(), f"output folder {str(folder)!r}")


def _probe_folder(folder: Path, output: str) -> None:
    """`check_can_create_folder` for an absolute `folder`; `output` names what is written in
    the messages. Safe when several processes probe the same folder at once (torchrun): a
    folder another process created or removed meanwhile is not an error (retried)."""
    for attempt in range(5):
        # is_file, not "exists and not is_dir": a folder may vanish between two such calls.
        if folder.is_file():
            raise TaptrError(f"cannot write {output}: {str(folder)!r} is a file, not a folder")
        missing = folder
        while not missing.exists():
            missing = missing.parent
        if missing.is_file():
            raise TaptrError(f"cannot write {output}: {str(missing)!r} is a file")
        created = []
        try:
            for path in reversed([folder, *folder.parents]):
                if path.exists():
                    continue
                try:
                    path.mkdir()
                    created.append(path)
                except FileExistsError:  # another process made it meanwhile
                    pass
            probe = folder / f".taptr-probe-{secrets.token_hex(4)}"
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            probe.unlink()
            return
        except FileNotFoundError:  # another process removed a folder it had made: again
            if attempt == 4:
                raise TaptrError(f"cannot write {output}: a folder on its path keeps "
                                 "disappearing") from None
        except OSError as error:
            reason = error.strerror or str(error)
            raise TaptrError(f"cannot write {output}: {reason}") from None
        finally:
            for path in reversed(created):
                with contextlib.suppress(OSError):
                    path.rmdir()


def check_can_write_file(path: str | os.PathLike) -> None:
    """Raise `TaptrError` unless a file can be written at `path` (its folder may be missing:
    `write_text_atomic` creates it). Creates nothing; see `check_can_create_folder`."""
    path = Path(path)
    if path.is_dir():
        raise TaptrError(f"cannot write {str(path)!r}: it is a folder")
    _probe_folder(path.absolute().parent, repr(str(path)))


def make_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` and its missing parents (nothing if it exists); returns it. Raises
    `TaptrError` with the system's reason when it cannot be created."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TaptrError(f"cannot create folder {str(folder)!r}: "
                         f"{error.strerror or error}") from None
    return folder


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically, creating missing folders; returns the path.
    Raises `TaptrError` when the location cannot be written."""
    path = Path(path)
    make_folder(path.parent)
    with atomic_path(path) as temp_path:
        temp_path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its files into `folder`.

    `folder` (and missing parents) is created only on success. On any exception the staging
    folder is removed and nothing appears at `folder`: a failed run leaves no partial output.
    Files already in `folder` with other names are kept; same names are replaced.
    """
    folder = Path(folder).absolute()
    check_can_create_folder(folder)
    anchor = folder
    while not anchor.exists():
        anchor = anchor.parent
    staging = anchor / f".taptr-staging-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
        folder.mkdir(parents=True, exist_ok=True)
        for item in sorted(staging.iterdir()):
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
