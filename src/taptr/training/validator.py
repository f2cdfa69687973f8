"""A run's validation: its sets, their scores and the baselines file (docs/training.md,
"Learning curves"). The scoring itself is `taptr.training.validation`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from taptr.io.atomic import write_text_atomic
from taptr.training.validation import METRIC_KEYS, evaluate_samples


class Validator:
    """The validation sets of a run and their scores (docs/training.md, "Learning curves").

    sets: name -> clips (a plain sequence becomes one set named 'heldout'), or None to
    render `config.eval.sets` on first use (`sources.build_eval_samples`, global generators
    untouched). `evaluate(model)` returns the mean AJ, delta_avg and OA over the sets, and
    per set ('easy_AJ', ...) when there are several.
    """

    def __init__(self, config, model_config, sets, device: torch.device,
                 autocast_dtype: torch.dtype | None, data_device: torch.device):
        if sets is not None and not isinstance(sets, Mapping):
            sets = {"heldout": list(sets)}
        self.config, self.model_config = config, model_config
        self._sets = sets
        self.device, self.autocast_dtype, self.data_device = device, autocast_dtype, data_device
        self.input_size = tuple(model_config.input_size)

    @property
    def names(self) -> list[str]:
        return list(self._sets) if self._sets is not None else list(self.config.eval.sets)

    def metric_names(self) -> list[str]:
        """The `eval_*` log columns: the means, then per set when there are several."""
        per_set = [f"{name}_{key}" for name in self.names for key in METRIC_KEYS]
        return [f"eval_{key}" for key in list(METRIC_KEYS) + (per_set if len(self.names) > 1
                                                               else [])]

    def sets(self) -> dict[str, Sequence]:
        if self._sets is None:
            from taptr.training.sources import build_eval_samples

            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                self._sets = build_eval_samples(self.config, self.model_config, self.data_device)
        return self._sets

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        per_set = {name: evaluate_samples(model, samples, self.input_size, self.device,
                                          self.autocast_dtype, self.config.eval.batch)
                   for name, samples in self.sets().items()}
        metrics = {key: float(np.mean([m[key] for m in per_set.values()])) for key in METRIC_KEYS}
        if len(per_set) > 1:
            for name, values in per_set.items():
                metrics.update({f"{name}_{key}": value for key, value in values.items()})
        return metrics

    def write_baselines(self, path: Path) -> dict | None:
        """baselines.json: static/lk/dis on the built-in sets, once per run folder. Returns
        the scores written (None when skipped: file present, other sets or data)."""
        if (path.is_file() or not set(self.names) <= set(self.config.eval.sets)
                or self.config.data.source != "synthetic"):
            return None
        from taptr.training.curves import baseline_scores

        scores = {name: baseline_scores(samples) for name, samples in self.sets().items()}
        write_text_atomic(path, json.dumps(scores, indent=2) + "\n")
        return scores
