"""Rules of the test suite itself: subprocess tests carry the `slow` marker and still run by
default; the official parity and loader tests fail instead of skipping under CI=true when
their cases are missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from official_cases import require_cases

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _marked_slow(function: ast.FunctionDef) -> bool:
    return any("pytest.mark.slow" in ast.unparse(decorator)
               for decorator in function.decorator_list)


def _uses_subprocess(function: ast.FunctionDef) -> bool:
    return any(isinstance(node, ast.Name) and node.id == "subprocess"
               for node in ast.walk(function))


def test_every_test_that_starts_a_subprocess_is_marked_slow():
    unmarked = []
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
                    and _uses_subprocess(node) and not _marked_slow(node)):
                unmarked.append(f"{path.name}::{node.name}")
    assert not unmarked


def test_slow_is_registered_and_the_default_run_includes_it(pytestconfig):
    """Registered in pyproject.toml's [tool.pytest.ini_options], and not deselected there."""
    assert any(line.startswith("slow:") for line in pytestconfig.getini("markers"))
    assert not any("slow" in option for option in pytestconfig.getini("addopts"))


@pytest.mark.parametrize("ci, outcome", [(None, pytest.skip.Exception),
                                         ("true", pytest.fail.Exception)])
def test_missing_official_cases_skip_locally_and_fail_under_ci(tmp_path, monkeypatch, ci,
                                                              outcome):
    monkeypatch.setenv("TAPTR_OFFICIAL_CASES", str(tmp_path / "nowhere"))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="official test vectors missing"):
        require_cases()


@pytest.mark.slow
def test_ci_run_without_official_cases_fails(tmp_path):
    """The parity and loader test files, run by pytest with CI=true and no cases: a failure,
    with the reason, for every test that needs the cases; without CI=true: skips."""
    files = ["tests/test_official_parity.py", "tests/test_official_loader.py"]
    reports = {}
    for ci in ("true", ""):
        env = {**os.environ, "CI": ci, "TAPTR_OFFICIAL_CASES": str(tmp_path / "nowhere"),
               "OMP_NUM_THREADS": "1"}
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "-rfEs", "-p", "no:cacheprovider", *files],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
        summary = [line.split()[0] for line in completed.stdout.splitlines()
                   if line.split()[:1] in (["ERROR"], ["FAILED"], ["SKIPPED"])
                   and "official test vectors missing" in line]
        reports[ci] = (completed.returncode, summary, completed.stdout)
    code, summary, output = reports["true"]
    assert code == 1 and summary == ["ERROR"] * 6, output[-3000:]  # 3 parity + 3 loader tests
    code, summary, output = reports[""]
    assert code == 0 and set(summary) == {"SKIPPED"}, output[-3000:]
