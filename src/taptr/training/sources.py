"""Clip sources for training and the held-out set, built from a `TrainConfig` (its `data`
and `eval` sections).

A clip source maps a clip index to a `TrackingSample` and depends only on its construction
arguments and the index (see `taptr.training.data`). Training clips:
* `synthetic`: the scene engine renders clip i from seed derive_seed(data_seed, i), with the
  "train" split of `textures` (procedural textures without a folder);
* `kubric:PATH`: the Kubric MOVi-F reader, clip i = sequence perm(i) with augmentations seeded
  by derive_seed(data_seed, i).
Held-out clips: synthetic scenes from a seed no training process draws from, textured with the
"heldout" split of `textures` (or every image of `eval_textures`), camera effects on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch

from taptr.config import ModelConfig
from taptr.errors import TaptrError
from taptr.data.seeding import derive_seed

VALIDATION_SEED = 20261130


def _clip_size(data, model_config: ModelConfig) -> tuple[int, int]:
    return tuple(data.clip_size) if data.clip_size else tuple(model_config.input_size)


@dataclass(frozen=True)
class DifficultyRamp:
    """Curriculum: clip `index` gets difficulty start + (end - start) * min(1, index / clips)."""

    start: float
    end: float
    clips: int

    def __call__(self, index: int) -> float:
        if self.clips <= 0:
            return self.end
        return self.start + (self.end - self.start) * min(1.0, index / self.clips)


class SyntheticClips:
    """Synthetic scenes: clip `index` rendered from derive_seed(seed, index) on `device`.

    `batch(indices)` renders several clips in one pass (faster on a GPU); it gives the same
    clips as calling the source on each index. With a `ramp` (curriculum) the difficulty of
    clip `index` is `ramp(index)`.
    """

    def __init__(self, scene_config, seed: int, device: torch.device | str = "cpu",
                 textures=None, ramp: DifficultyRamp | None = None):
        self.scene_config = scene_config
        self.seed = int(seed)
        self.device = torch.device(device)
        self.ramp = ramp
        self._textures = textures
        self._generator = None  # built lazily: DataLoader workers build their own

    def _scene_generator(self):
        if self._generator is None:
            from taptr.data.scenes import SceneGenerator

            self._generator = SceneGenerator(self.scene_config, self._textures, self.device)
        return self._generator

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_generator"] = None
        return state

    def clip_seed(self, index: int) -> int:
        return derive_seed(self.seed, int(index))

    def _set_difficulty(self, index: int) -> None:
        from taptr.data.scenes.config import SceneRanges

        config = dataclasses.replace(self.scene_config, difficulty=self.ramp(index))
        self._scene_generator().ranges = SceneRanges.from_config(config)

    def __call__(self, index: int):
        if self.ramp is not None:
            self._set_difficulty(index)
        return self._scene_generator().generate(self.clip_seed(index))

    def batch(self, indices: Sequence[int]) -> list:
        if self.ramp is not None:
            return [self(i) for i in indices]
        return self._scene_generator().generate_batch([self.clip_seed(i) for i in indices])


def scene_config(data, model_config: ModelConfig, textures: str | None, split: str,
                 effects: bool = True):
    """The scene engine's config for the `data` section (`DataConfig`)."""
    from taptr.data.scenes.config import SceneConfig

    return SceneConfig(size=_clip_size(data, model_config), num_frames=data.clip_length,
                       num_points=data.num_points, difficulty=data.difficulty,
                       effects=effects, textures=textures, texture_split=split)


def build_clip_source(config, model_config: ModelConfig, data_seed: int,
                      device: torch.device):
    """The training clip source of one process (its own `data_seed`)."""
    data = config.data
    if data.source == "synthetic":
        ramp = None
        if data.curriculum_steps > 0:
            ramp = DifficultyRamp(data.difficulty_start,
                                  scene_config(data, model_config, None, "all").difficulty,
                                  data.curriculum_steps * data.batch * config.optim.grad_accum)
        return SyntheticClips(scene_config(data, model_config, data.textures, "train"),
                              data_seed, device, ramp=ramp)
    if data.source.startswith("kubric:"):
        return _kubric_source(data, model_config, data_seed)
    raise TaptrError(f"unknown data source {data.source!r}")


def _kubric_source(data, model_config: ModelConfig, data_seed: int):
    from taptr.data.kubric import KubricClips

    path = data.source.split(":", 1)[1]
    return KubricClips(path, seed=data_seed, size=_clip_size(data, model_config),
                       num_frames=data.clip_length, num_points=data.num_points)


def build_eval_samples(config, model_config: ModelConfig, device: torch.device) -> dict:
    """The validation sets (`curves.VALIDATION_SETS`, named by `config.eval.sets`), rendered
    once at the start of a run: name -> list of TrackingSample."""
    from taptr.data.scenes.textures import TextureLibrary
    from taptr.training.curves import build_validation_sets

    if config.eval.textures:
        library = TextureLibrary.load(config.eval.textures, split="all")
    elif config.data.textures:
        library = TextureLibrary.load(config.data.textures, split="heldout")
    else:
        library = TextureLibrary.empty()
    # A fixed seed (not the run's): every run is scored on the same clips.
    return build_validation_sets(config.eval.sets, config.eval.clips, VALIDATION_SEED, library,
                                 device)
