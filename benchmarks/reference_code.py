"""Run a snippet under an older commit of this repository, for side-by-side measurements.

    with checkout(COMMIT) as source_dir:      # a detached `git worktree` in a temporary folder
        run_python(SCRIPT, source_dir, args)  # its `src` first on PYTHONPATH, same interpreter

Both sides run in subprocesses with the same interpreter, packages and thread settings, so the
only difference is the taptr code.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

REPOSITORY = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checkout(commit: str) -> Iterator[Path]:
    """A read-only working copy of `commit` (git worktree), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="taptr-reference-") as folder:
        target = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", "--quiet",
                        str(target), commit], check=True)
        try:
            yield target
        finally:
            subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "remove", "--force",
                            str(target)], check=False)


def run_python(script: Path, source_dir: Path, args: list[str], threads: int) -> str:
    """Run `script` with `source_dir/src` first on the import path; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(source_dir / "src"), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    completed = subprocess.run([sys.executable, str(script), *args], env=env,
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{script.name} under {source_dir} failed:\n{completed.stderr[-3000:]}")
    return completed.stdout
