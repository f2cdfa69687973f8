"""A training run's settings: nested dataclasses, run config files, `--set` overrides.

    [run]    where the run folder is, seed, length (steps, max_minutes), device, logging,
             checkpoints and exports;
    [model]  the network: preset, the weights it starts from, frozen pretrained parts;
    [data]   the training clips: source (synthetic scenes or Kubric), clip length, size,
             points, difficulty and curriculum, textures, batch, workers;
    [optim]  optimisation: which parameters train, AdamW and its learning rates, schedule,
             gradient accumulation and clipping, EMA;
    [loss]   the criterion's settings (`taptr.training.losses.TrackingCriterion`);
    [eval]   validation: sets, clips per set, cadence.

A run config file is TOML (`docs/training.md`, "Run config files"): one table per section,
every key optional (missing keys keep their defaults). The resolved config that a run writes
to its folder (`config.json`, key "train") is the same structure as JSON, and loads with
`--config` too. `--set section.key=value` changes one field, the value parsed by the field's
type. Configs of runs made before the nesting (one flat table, commits up to 723522c) are
converted by `from_flat`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from taptr.errors import TaptrError
from taptr.training.optim import SCHEDULES

AMP_MODES = ("auto", "none", "bf16", "fp16")


@dataclass
class RunConfig:
    """Where and how long: the run folder, seed, stopping, device, logging, checkpoints."""

    out: str = "runs/default"
    seed: int = 42
    steps: int = 20000  # optimizer steps; the schedule spans them
    max_minutes: float = 0.0  # end this session after so many wall-clock minutes; 0 = no limit
    device: str = "auto"
    amp: str = "auto"  # 'auto' (bf16 on CUDA, off on CPU), 'none', 'bf16', 'fp16'
    log_every: int = 10
    ckpt_every: int = 200
    export_every: int = 200
    progress: bool = True


@dataclass
class ModelSetup:
    """The network and what it starts from (pretrained parts are frozen in `optim`)."""

    preset: str = "small"
    init_weights: str | None = None  # weights to fine-tune from: a registered name or a file
    init_backbone: str | None = None  # ImageNet backbone weights (`training.pretrained`)
    # Tracking options the run trains and exports with, as KEY=VALUE changes to the preset's
    # defaults (`taptr.models.TrackingOptions`, e.g. "flow_prior=on"): the training forward
    # runs our additions as tracking will, and the weights store them as their defaults.
    options: tuple[str, ...] = ()


@dataclass
class DataConfig:
    """The training clips. `source`: 'synthetic' (scene engine) or 'kubric:PATH'."""

    source: str = "synthetic"
    batch: int = 1  # clips per process per micro-batch
    clip_length: int = 12
    clip_size: tuple[int, int] | None = None  # (H, W) of training clips; None = model input
    num_points: int = 64
    difficulty: float | str = 0.5  # synthetic scenes: 0..1 or 'easy'/'medium'/'hard'
    # Curriculum (synthetic): difficulty rises linearly from `difficulty_start` to
    # `difficulty` over the first `curriculum_steps` optimizer steps (0: no curriculum).
    difficulty_start: float = 0.2
    curriculum_steps: int = 2000
    textures: str | None = None  # folder of photos ('train' split); None: procedural
    workers: int = 0  # DataLoader workers; 0 renders clips in the main process on `device`
    device: str = "auto"  # where clips are rendered: 'auto' = training device with 0 workers


@dataclass
class OptimConfig:
    """Which parameters train and how: AdamW with two groups (names containing 'backbone' at
    `lr_backbone`, 0 freezing them; the rest at `lr`), warmup + schedule, clipping, EMA."""

    # Train only parameters whose name starts with one of these (e.g. 'hooks.correlation');
    # empty: all (but a frozen backbone).
    train_only: tuple[str, ...] = ()
    lr: float = 5e-4
    lr_backbone: float = 0.0
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # 'cosine', 'multistep' or 'constant'
    warmup_steps: int = 50
    lr_milestones: tuple[float, ...] = (2 / 3, 13 / 15)  # fractions of run.steps (multistep)
    lr_gamma: float = 0.1
    min_lr_factor: float = 0.01  # cosine floor
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    ema_decay: float = 0.99
    ema_warmup: bool = True


@dataclass
class LossConfig:
    """Settings of `TrackingCriterion` (the paper's loss, weights 5 / 5 / 1, plus ours)."""

    # Ours: cap each point-frame's location error at this many input pixels (0: the official
    # plain L1); lost points then give no gradient.
    location_cap_px: float = 0.0


@dataclass
class EvalConfig:
    """Validation of the EMA model on fixed synthetic sets (`training.curves`)."""

    every: int = 200  # steps between validations (and one at step 0); 0 disables
    sets: tuple[str, ...] = ("easy", "medium")
    clips: int = 6  # clips per set
    batch: int = 1
    textures: str | None = None  # photos of the sets (None: the held-out split of data.textures)


SECTIONS = {"run": RunConfig, "model": ModelSetup, "data": DataConfig, "optim": OptimConfig,
            "loss": LossConfig, "eval": EvalConfig}
# Fields that define the data order and the optimisation problem: a resumed run keeps them.
FIXED_ON_RESUME = ("model.preset", "data.source", "data.batch", "optim.grad_accum", "run.seed",
                   "data.num_points", "data.clip_length", "data.clip_size")


@dataclass
class TrainConfig:
    """Every setting of a training run (saved as runs/NAME/config.json, key "train").

    The defaults are our CPU recipe for the small preset (docs/training.md): frozen ImageNet
    backbone, 12-frame clips, 64 points, lr 5e-4 with a short warmup, gradient clip 1.0, EMA
    0.99, a difficulty curriculum. `check()` validates values; `check_inputs()` the files and
    folders named (the Trainer calls both before building anything).
    """

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelSetup = field(default_factory=ModelSetup)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, origin: str = "config") -> "TrainConfig":
        """Nested {section: {field: value}}; unknown sections or keys are errors naming them."""
        if not isinstance(values, dict):
            raise TaptrError(f"{origin}: expected a table of sections, got {type(values).__name__}")
        unknown = sorted(set(values) - set(SECTIONS))
        if unknown:
            raise TaptrError(f"{origin}: not a section: {', '.join(unknown)} (sections are "
                             f"{', '.join(SECTIONS)})")
        config = cls()
        for section, entries in values.items():
            if not isinstance(entries, dict):
                raise TaptrError(f"{origin}: [{section}] must be a table")
            for key, value in entries.items():
                config.set(f"{section}.{key}", value, origin)
        return config

    @classmethod
    def from_any(cls, values: dict, origin: str = "config") -> "TrainConfig":
        """A nested config (a table of tables), or a flat one (plain values) of runs made
        before the nesting (`from_flat`)."""
        if isinstance(values, dict) and not all(isinstance(v, dict) for v in values.values()):
            return from_flat(values, origin)
        return cls.from_dict(values, origin)

    def flat(self) -> dict[str, object]:
        """{'section.key': value} of every field."""
        return {f"{section}.{key}": value for section, entries in self.to_dict().items()
                for key, value in entries.items()}

    # ------------------------------------------------------------------ changes
    def set(self, key: str, value, origin: str = "--set") -> None:
        """Set field `key` ('section.name') to `value`, a string (parsed by the field's type)
        or a TOML/JSON value (checked against it). Raises TaptrError naming the key."""
        section_name, _, name = key.partition(".")
        section = getattr(self, section_name, None) if section_name in SECTIONS else None
        kinds = _field_types(type(section)) if section is not None else {}
        if name not in kinds:
            raise TaptrError(f"{origin}: unknown setting {key!r}; "
                             f"{_suggest(key, list(self.flat()))}")
        try:
            parsed = _parse(value, kinds[name])
        except (TypeError, ValueError):
            raise TaptrError(f"{origin}: {key} must be {_type_name(kinds[name])}, "
                             f"got {value!r}") from None
        setattr(section, name, parsed)

    def override(self, assignments: typing.Iterable[str]) -> "TrainConfig":
        """Apply `--set` assignments 'section.key=value' in order; returns self."""
        for assignment in assignments:
            key, equals, value = assignment.partition("=")
            if not equals:
                raise TaptrError(f"--set expects section.key=value, got {assignment!r}")
            self.set(key.strip(), value.strip())
        return self

    def replace(self, **changes) -> "TrainConfig":
        """A copy with 'section__key' (or section=dataclass) changes, for code and tests."""
        copy = TrainConfig.from_dict(self.to_dict())
        for name, value in changes.items():
            if name in SECTIONS:
                setattr(copy, name, value)
            else:
                copy.set(name.replace("__", "."), value, "replace")
        return copy

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Values in range, names known. Raises TaptrError naming the setting."""
        from taptr.models.registry import get_preset
        from taptr.training.curves import VALIDATION_SETS

        values = self.flat()
        at_least_one = ("run.steps", "run.log_every", "run.ckpt_every", "run.export_every",
                        "data.batch", "data.num_points", "optim.grad_accum", "eval.clips",
                        "eval.batch")
        for key in at_least_one:
            if values[key] < 1:
                raise TaptrError(f"{key} must be at least 1, got {values[key]}")
        for key in ("optim.lr", "optim.lr_backbone", "optim.weight_decay", "optim.grad_clip",
                    "optim.warmup_steps", "eval.every", "data.workers", "run.max_minutes",
                    "data.curriculum_steps", "loss.location_cap_px"):
            if not values[key] >= 0 or not math.isfinite(values[key]):
                raise TaptrError(f"{key} must be a finite number >= 0, got {values[key]}")
        if self.data.clip_length < 8:
            raise TaptrError(f"data.clip_length must be at least 8 frames, got "
                             f"{self.data.clip_length}")
        if self.data.clip_size is not None and min(self.data.clip_size) < 16:
            raise TaptrError(f"data.clip_size is too small: {self.data.clip_size}")
        if self.run.amp not in AMP_MODES:
            raise TaptrError(f"run.amp must be one of {AMP_MODES}, got {self.run.amp!r}")
        if self.optim.schedule not in SCHEDULES:
            raise TaptrError(f"optim.schedule must be one of {SCHEDULES}, got "
                             f"{self.optim.schedule!r}")
        if not 0 <= self.optim.ema_decay < 1:
            raise TaptrError(f"optim.ema_decay must lie in [0, 1), got {self.optim.ema_decay}")
        if not 0 <= self.data.difficulty_start <= 1:
            raise TaptrError(f"data.difficulty_start must lie in [0, 1], got "
                             f"{self.data.difficulty_start}")
        source = self.data.source
        if source != "synthetic" and not source.startswith("kubric:"):
            raise TaptrError(f"data.source must be 'synthetic' or 'kubric:PATH', got {source!r}")
        unknown = [name for name in self.eval.sets if name not in VALIDATION_SETS]
        if unknown:
            raise TaptrError(f"unknown eval.sets {unknown}; choose from {sorted(VALIDATION_SETS)}")
        get_preset(self.model.preset)  # raises on an unknown preset

    def check_inputs(self) -> None:
        """Every file and folder named exists (fail at once, not after building the model)."""
        folders = {"data.textures": self.data.textures, "eval.textures": self.eval.textures}
        if self.data.source.startswith("kubric:"):
            folders["data.source"] = self.data.source.split(":", 1)[1]
        for key, folder in folders.items():
            if folder is not None and not Path(folder).is_dir():
                raise TaptrError(f"{key}: folder not found: {folder}")
        from taptr.models.registry import get_entry, is_registered

        for key in ("init_weights", "init_backbone"):
            path = getattr(self.model, key)
            named = (key == "init_weights" and is_registered(path)
                     and get_entry(path).weights is not None)  # e.g. taptr-small
            if path is not None and not named and not Path(path).is_file():
                raise TaptrError(f"model.{key}: file not found: {path}")


# ---------------------------------------------------------------------- files
def load_config(path: str | Path) -> TrainConfig:
    """A run config file: TOML (`.toml`), or JSON (`.json`: a run folder's config.json, whose
    "train" entry is used, nested or in the flat format of older runs)."""
    path = Path(path)
    if not path.is_file():
        raise TaptrError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            values = _toml_loads(text)
        except ValueError as error:  # tomllib.TOMLDecodeError is a ValueError
            raise TaptrError(f"{path}: not valid TOML: {error}") from None
    elif path.suffix == ".json":
        try:
            values = json.loads(text)
        except ValueError as error:
            raise TaptrError(f"{path}: not valid JSON: {error}") from None
        if isinstance(values, dict) and isinstance(values.get("train"), dict):
            values = values["train"]
    else:
        raise TaptrError(f"{path}: a run config is a .toml or .json file")
    return TrainConfig.from_any(values, str(path))


def _toml_loads(text: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the pinned backport of the same parser (pyproject.toml)
        import tomli as tomllib
    return tomllib.loads(text)


# ---------------------------------------------------------------------- the flat format
# Flat names of runs up to commit 723522c -> nested keys (same values, same meaning).
FLAT_NAMES = {
    "preset": "model.preset", "init_weights": "model.init_weights",
    "init_backbone": "model.init_backbone", "data": "data.source", "out": "run.out",
    "steps": "run.steps", "seed": "run.seed", "max_minutes": "run.max_minutes",
    "device": "run.device", "amp": "run.amp", "log_every": "run.log_every",
    "ckpt_every": "run.ckpt_every", "export_every": "run.export_every",
    "progress": "run.progress", "batch": "data.batch", "clip_length": "data.clip_length",
    "clip_size": "data.clip_size", "num_points": "data.num_points",
    "difficulty": "data.difficulty", "difficulty_start": "data.difficulty_start",
    "curriculum_steps": "data.curriculum_steps", "textures": "data.textures",
    "workers": "data.workers", "data_device": "data.device", "train_only": "optim.train_only",
    "lr": "optim.lr", "lr_backbone": "optim.lr_backbone", "weight_decay": "optim.weight_decay",
    "schedule": "optim.schedule", "warmup_steps": "optim.warmup_steps",
    "lr_milestones": "optim.lr_milestones", "lr_gamma": "optim.lr_gamma",
    "min_lr_factor": "optim.min_lr_factor", "grad_accum": "optim.grad_accum",
    "grad_clip": "optim.grad_clip", "ema_decay": "optim.ema_decay",
    "ema_warmup": "optim.ema_warmup", "loss_cap_px": "loss.location_cap_px",
    "eval_every": "eval.every", "eval_sets": "eval.sets", "eval_clips": "eval.clips",
    "eval_batch": "eval.batch", "eval_textures": "eval.textures",
}
# Settings of experiments recorded as lost (docs/training_runs/README.md, s4a-s5b), retired
# after 723522c, with the value that is what the code does now.
RETIRED = {"optimizer": "adamw", "apu_loss_weight": 5.0, "visibility_loss_weight": 1.0,
           "loss_layers": "all", "visibility_target_px": 0.0, "focal_alpha": 0.25}
# Flat runs saved before a setting existed trained with: (the default of that time).
FLAT_MISSING = {"curriculum_steps": 0}


def from_flat(values: dict, origin: str = "config") -> TrainConfig:
    """A config in the flat format of runs up to commit 723522c, with the same values.

    Retired settings holding what the code now does are dropped; a run that used a retired
    experiment (SGD, other loss weights, last-layer supervision, the tracked visibility
    target, another focal alpha) cannot be run again by this version: TaptrError saying so.
    Those runs predate the flow prior (docs/flow_prior.md), now on in the small preset's
    defaults: their model.options turn it off, so they train as they did.
    """
    values = {**FLAT_MISSING, **values}
    used = {name: values[name] for name, kept in RETIRED.items()
            if name in values and values[name] != kept}
    if used:
        shown = ", ".join(f"{name}={value!r}" for name, value in used.items())
        raise TaptrError(f"{origin}: this run used retired settings ({shown}); their results "
                         "are in docs/training_runs/README.md, and commit 723522c can run it")
    unknown = sorted(set(values) - set(FLAT_NAMES) - set(RETIRED))
    if unknown:
        raise TaptrError(f"{origin}: not a setting: {', '.join(unknown)}")
    nested: dict[str, dict] = {}
    for name, value in values.items():
        if name in FLAT_NAMES:
            section, key = FLAT_NAMES[name].split(".")
            nested.setdefault(section, {})[key] = value
    nested.setdefault("model", {})["options"] = ["flow_prior=off"]
    return TrainConfig.from_dict(nested, origin)


# ---------------------------------------------------------------------- value parsing
def _field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _parse(value, kind):
    """`value` (a string from the command line, or a TOML/JSON value) as type `kind`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
            raise ValueError(value)
        for arg in (a for a in args if a is not type(None)):
            try:
                return _parse(value, arg)
            except (TypeError, ValueError):
                continue
        raise ValueError(value)
    if origin is tuple:
        if isinstance(value, str):
            separator = "x" if args and args[0] is int and "x" in value.lower() else ","
            value = [part.strip() for part in value.lower().split(separator) if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(item, args[0]) for item in value)
        if len(value) != len(args):
            raise ValueError(value)
        return tuple(_parse(item, arg) for item, arg in zip(value, args))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool) or isinstance(value, float):
            raise TypeError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError(value)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    raise TypeError(kind)


def _type_name(kind) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if kind in names:
        return names[kind]
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        return "a comma-separated list" if args[-1] is Ellipsis else f"{len(args)} values (AxB)"
    return " or ".join("none" if a is type(None) else _type_name(a) for a in args)


def _suggest(key: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    section = key.partition(".")[0]
    if section in SECTIONS:
        return f"[{section}] has {[k.partition('.')[2] for k in known if k.startswith(section + '.')]}"
    return f"sections are {list(SECTIONS)}"
