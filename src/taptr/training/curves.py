"""Learning curves: fixed validation sets, their baseline scores, and the curve table.

A run is judged by AJ on fixed synthetic validation sets (held-out photos, seeds no training
process draws from) against training CPU time, next to what classical trackers score on the
very same clips. The sets:

* `easy`: 24 frames at 256x320, difficulty 0.2 (slow rigid motion, slow camera drift), 0-2
  foreground objects, camera effects on;
* `medium`: 24 frames at 256x320, difficulty 0.5, 3-10 foreground objects (occlusions, elastic
  motion, blur, compression).

`baseline_scores` runs the static, Lucas-Kanade and DIS trackers on a set (tapnet's `first`
query mode, like the model's validation); `curve_table` turns a run folder's log.csv and
baselines.json into a Markdown table of AJ against CPU minutes and clips seen.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from taptr.data.scenes.config import SceneConfig
from taptr.errors import TaptrError
from taptr.data.seeding import derive_seed

VALIDATION_SETS: dict[str, SceneConfig] = {
    "easy": SceneConfig(size=(256, 320), num_frames=24, num_points=64, difficulty=0.2,
                        min_foreground=0, max_foreground=2),
    "medium": SceneConfig(size=(256, 320), num_frames=24, num_points=64, difficulty=0.5),
}
BASELINES = ("static", "lk", "dis")
VALIDATION_STREAM = "validation"


def build_validation_sets(names: Sequence[str], clips: int, seed: int, textures=None,
                          device: torch.device | str = "cpu") -> dict[str, list]:
    """name -> `clips` TrackingSamples of that validation set.

    textures: a `TextureLibrary` of held-out photos (None: procedural textures only). The clips
    depend only on (seed, name, index): every run with the same seed sees the same set.
    """
    from taptr.data.scenes import SceneGenerator
    from taptr.data.scenes.textures import TextureLibrary

    unknown = [name for name in names if name not in VALIDATION_SETS]
    if unknown:
        noun = "validation set" if len(unknown) == 1 else "validation sets"
        raise TaptrError(f"unknown {noun} {unknown}; choose from "
                         f"{sorted(VALIDATION_SETS)}")
    library = textures if textures is not None else TextureLibrary.empty()
    sets = {}
    for name in names:
        generator = SceneGenerator(replace(VALIDATION_SETS[name]), library, device)
        seeds = [derive_seed(seed, VALIDATION_STREAM, name, index) for index in range(clips)]
        sets[name] = [generator.generate(s) for s in seeds]
    return sets


def baseline_scores(samples: Sequence, trackers: Sequence[str] = BASELINES) -> dict:
    """tracker -> mean {AJ, delta_avg, OA} over `samples` (first query mode)."""
    from taptr.evaluation.baselines import make_baseline
    from taptr.training.validation import METRIC_KEYS, score_pixels

    scores = {}
    for name in trackers:
        tracker = make_baseline(name)
        per_clip = []
        for sample in samples:
            sample = sample.to("cpu")
            result = tracker.track(np.ascontiguousarray(sample.video.numpy()),
                                   sample.queries().numpy())
            predicted = torch.as_tensor(np.asarray(result.tracks), dtype=torch.float32)
            visible = torch.as_tensor(np.asarray(result.visible)).float()
            per_clip.append(score_pixels(sample, predicted.transpose(0, 1),
                                         visible.transpose(0, 1)))
        scores[name] = {key: float(np.nanmean([c[key] for c in per_clip])) for key in METRIC_KEYS}
    return scores


def curve_table(run: str | Path) -> str:
    """Markdown table of a run's validation rows (log.csv) under its baselines.json."""
    run = Path(run)
    log = run / "log.csv"
    if not log.is_file():
        raise TaptrError(f"no log.csv in {run}")
    with log.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("eval_AJ")]
    baselines = {}
    if (run / "baselines.json").is_file():
        baselines = json.loads((run / "baselines.json").read_text())
    sets = sorted({key[5:-3] for row in rows for key in row
                   if key.startswith("eval_") and key.endswith("_AJ") and key != "eval_AJ"})
    sets = sets or sorted(baselines)
    header = ["step", "CPU min", "clips"] + [f"AJ {name}" for name in sets] + ["AJ mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in BASELINES:
        if all(name in baselines.get(s, {}) for s in sets) and sets:
            values = [baselines[s][name]["AJ"] for s in sets]
            lines.append("| " + " | ".join([name, "", ""] + [f"{v:.3f}" for v in values]
                                           + [f"{np.mean(values):.3f}"]) + " |")
    for row in rows:
        cpu = float(row.get("cpu_s") or row.get("wall_s") or 0) / 60
        values = [float(row.get(f"eval_{s}_AJ") or "nan") for s in sets]
        lines.append("| " + " | ".join(
            [row["step"], f"{cpu:.1f}", row.get("clips_seen", "")]
            + [f"{v:.3f}" for v in values] + [f"{float(row['eval_AJ']):.3f}"]) + " |")
    return "\n".join(lines) + "\n"
