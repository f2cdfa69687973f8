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
from taptr.weights import DEFAULT_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
MODEL_CARD = (REPO / "docs" / "model_card.md").read_text()
BUNDLED_ROW = "| **taptr-small v3.2 (bundled)**"


def _first_mode_aj(row_start: str) -> str:
    """AJ (first) of a row of the model card's held-out benchmark table."""
    rows = [line for line in MODEL_CARD.splitlines() if line.startswith(row_start)]
    assert rows, row_start
    return rows[-1].split("|")[2].strip()  # the held-out table comes after the validation one


def test_the_readme_opens_with_the_bundled_models_status():
    lines = README.splitlines()
    make_demo = ("make demo   # fresh machine: sets up .venv (CPU PyTorch), tracks points "
                 "through a real clip -> demo_out/")
    make_test = ("make test   # fresh machine: sets up .venv and runs the test suite (what CI "
                 "runs: .ci/run)")
    assert lines[:6] == ["# taptr", "", "```bash", make_demo, make_test, "```"]
    # Between the make commands and the first claim about the project.
    status = README[README.index("```\n", README.index("make test")):README.index("**taptr** is")]
    assert "taptr-small" in status and "AJ" in status
    for row in (BUNDLED_ROW, "| dis (", "| lk ("):
        assert _first_mode_aj(row) in status, row


def test_the_model_cards_held_out_score_is_the_committed_result():
    import json

    results = json.loads((REPO / "benchmarks" / "results" / "h_taptr_first.json").read_text())
    assert results["protocol"]["weights"] is None  # the bundled weights
    assert _first_mode_aj(BUNDLED_ROW) == f"{100 * results['metrics']['average_jaccard']:.1f}"


def test_the_readme_says_how_to_run_single_threaded(capsys):
    assert "taptr track clip.mp4 --threads 1" in README
    assert "OMP_NUM_THREADS=1" in README and "torch.set_num_threads(1)" in README
    for command in ("track", "eval"):  # the option the README names exists
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
        assert weights is None or weights.group(1) == DEFAULT_WEIGHTS, line
    assert not any("random weights" in block for block in blocks)
