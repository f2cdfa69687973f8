"""The training loop: `TrainConfig` and `Trainer`.

One optimizer step = `grad_accum` micro-batches of `batch` clips on each of `world_size`
processes. Per step: forward under autocast (bf16 on CUDA by default), the losses of
docs/architecture.md (section 6.1) in float32, backward (DDP averages gradients across
processes), gradient clipping, AdamW step, schedule step, EMA update. Every `log_every` steps
a CSV row (and TensorBoard scalars), every `eval_every` steps the EMA model is scored on the
fixed validation sets (`curves.py`), every `ckpt_every` steps `last.pt` is written for exact
resume, every `export_every` steps (and at the end) the EMA weights are exported as
safetensors.

A run stops at `steps`, at `until_step`, or once `max_minutes` of wall time have passed in this
session, always with a checkpoint and an EMA export.

Run folder (`out`): config.json (resolved train + model config), log.csv (losses, CPU seconds,
clips seen, validation metrics), baselines.json (static/lk/dis on the validation sets), last.pt,
ema.safetensors (latest EMA), best.safetensors (best mean validation AJ), tensorboard/ if
installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from taptr.config import ModelConfig, dataclass_from_dict, get_preset
from taptr.data.seeding import derive_seed
from taptr.device import autocast, resolve_precision
from taptr.distributed import DistributedContext
from taptr.errors import TaptrError
from taptr.models.state_dict import load_state_strict
from taptr.text import count
from taptr.training import checkpoint as ckpt
from taptr.training.data import batch_stream
from taptr.training.ema import ModelEma
from taptr.training.losses import LOSS_LAYERS, LossWeights, loss_part_names, tracking_loss
from taptr.training.optim import OPTIMIZERS, LrSchedule, build_optimizer, build_scheduler
from taptr.training.run_log import CsvLog, TensorBoardLog
from taptr.training.validation import METRIC_KEYS, evaluate_samples

logger = logging.getLogger(__name__)

AMP_MODES = ("auto", "none", "bf16", "fp16")
CHECKPOINT_FORMAT = "taptr-train-1"
# Fields that define the data order and the optimisation problem: a resumed run must keep them.
FIXED_ON_RESUME = ("preset", "data", "batch", "grad_accum", "seed", "num_points", "clip_length",
                   "clip_size")


@dataclass
class TrainConfig:
    """Every setting of a training run (saved as runs/NAME/config.json).

    The defaults are our CPU recipe for the small preset (docs/training.md, measured in
    docs/training_runs/): frozen ImageNet backbone, short clips (two windows), 64 points, lr
    5e-4 with a short warmup, gradient clip 1.0, EMA 0.99, a difficulty curriculum from easy
    to `difficulty`. The paper's recipe (docs/architecture.md, section 6.3) is
    `docs/training.md`'s "paper recipe":
    lr 2e-4, lr_backbone 1e-5, grad_clip 0.1, 24-frame clips, 800 points, EMA 0.9997.
    """

    preset: str = "small"
    data: str = "synthetic"  # 'synthetic' or 'kubric:PATH'
    out: str = "runs/default"
    steps: int = 20000  # optimizer steps
    batch: int = 1  # clips per process per micro-batch
    grad_accum: int = 1
    lr: float = 5e-4
    lr_backbone: float = 0.0  # parameters whose name contains 'backbone'; 0 freezes them
    # Train only parameters whose name starts with one of these (e.g. 'hooks.correlation');
    # empty: all (ours, for fine-tuning a part of a model that already tracks).
    train_only: tuple[str, ...] = ()
    # Ours: cap each point-frame's location error at this many input pixels (0: the official
    # plain L1); lost points then give no gradient (`tracking_loss`'s location_cap).
    loss_cap_px: float = 0.0
    # Loss weights (official: 5 for every layer's APU positions, 1 for the visibility focal
    # loss); ours to change when fine-tuning (docs/training.md).
    apu_loss_weight: float = 5.0
    visibility_loss_weight: float = 1.0
    # Ours: the visibility target is "visible and the last layer's position within this many
    # input pixels" (0: the official occlusion target; `tracking_loss`'s tracked_threshold_px).
    visibility_target_px: float = 0.0
    focal_alpha: float = 0.25  # weight of the positive (visible) class in the focal loss
    loss_layers: str = "all"  # 'all' decoder layers' positions supervised (official) or 'last'
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # 'adamw' (official) or 'sgd' (ours: Nesterov momentum 0.9)
    schedule: str = "cosine"  # 'cosine', 'multistep' or 'constant'
    warmup_steps: int = 50
    lr_milestones: tuple[float, ...] = (2 / 3, 13 / 15)  # fractions of `steps` (multistep)
    lr_gamma: float = 0.1
    min_lr_factor: float = 0.01  # cosine floor
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    ema_decay: float = 0.99
    ema_warmup: bool = True
    amp: str = "auto"  # 'auto' (bf16 on CUDA, off on CPU), 'none', 'bf16', 'fp16'
    device: str = "auto"
    seed: int = 42
    num_points: int = 64
    clip_length: int = 12
    clip_size: tuple[int, int] | None = None  # (H, W) of training clips; None = model input
    difficulty: float | str = 0.5  # synthetic scenes: 0..1 or 'easy'/'medium'/'hard'
    # Curriculum (synthetic): difficulty rises linearly from `difficulty_start` to `difficulty`
    # over the first `curriculum_steps` optimizer steps (0: no curriculum).
    difficulty_start: float = 0.2
    curriculum_steps: int = 2000
    max_minutes: float = 0.0  # stop this session after so many wall-clock minutes; 0 = no limit
    textures: str | None = None
    eval_textures: str | None = None
    init_backbone: str | None = None
    init_weights: str | None = None  # our .safetensors weights to fine-tune from
    workers: int = 0  # DataLoader workers; 0 renders clips in the main process on `data_device`
    data_device: str = "auto"  # 'auto' = training device when workers == 0, else cpu
    log_every: int = 10
    eval_every: int = 200  # 0 disables
    eval_sets: tuple[str, ...] = ("easy", "medium")  # validation sets (curves.py)
    eval_clips: int = 6  # clips per validation set
    eval_batch: int = 1
    ckpt_every: int = 200
    export_every: int = 200
    progress: bool = True

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(float(m) for m in self.lr_milestones)
        self.eval_sets = tuple(self.eval_sets)
        self.train_only = tuple(self.train_only)
        if self.clip_size is not None:
            self.clip_size = (int(self.clip_size[0]), int(self.clip_size[1]))
        self.validate()

    def validate(self) -> None:
        positive = ("steps", "batch", "grad_accum", "num_points", "log_every", "eval_clips",
                    "eval_batch", "ckpt_every", "export_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise TaptrError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "lr_backbone", "weight_decay", "grad_clip", "warmup_steps",
                     "apu_loss_weight", "visibility_loss_weight", "visibility_target_px",
                     "eval_every", "workers", "max_minutes", "curriculum_steps"):
            if getattr(self, name) < 0:
                raise TaptrError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.clip_length < 8:
            raise TaptrError(f"clip_length must be at least 8 frames, got {self.clip_length}")
        if self.amp not in AMP_MODES:
            raise TaptrError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if not 0 <= self.ema_decay < 1:
            raise TaptrError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.data != "synthetic" and not self.data.startswith("kubric:"):
            raise TaptrError(f"data must be 'synthetic' or 'kubric:PATH', got {self.data!r}")
        if not 0 <= self.difficulty_start <= 1:
            raise TaptrError(f"difficulty_start must lie in [0, 1], got {self.difficulty_start}")
        from taptr.training.curves import VALIDATION_SETS

        unknown = [name for name in self.eval_sets if name not in VALIDATION_SETS]
        if unknown:
            raise TaptrError(f"unknown eval_sets {unknown}; choose from {sorted(VALIDATION_SETS)}")
        if self.clip_size is not None and min(self.clip_size) < 16:
            raise TaptrError(f"clip_size is too small: {self.clip_size}")
        LrSchedule(kind=self.schedule)  # raises on an unknown schedule
        if not math.isfinite(self.visibility_target_px):
            raise TaptrError(f"visibility_target_px must be finite, got {self.visibility_target_px}")
        if not 0 < self.focal_alpha < 1:
            raise TaptrError(f"focal_alpha must lie in (0, 1), got {self.focal_alpha}")
        if self.loss_layers not in LOSS_LAYERS:
            raise TaptrError(f"loss_layers must be 'all' or 'last', got {self.loss_layers!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TaptrError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        get_preset(self.preset)  # raises on an unknown preset
        self._check_paths()

    def _check_paths(self) -> None:
        """Fail at once, not after building the model, on a missing input."""
        folders = {"textures": self.textures, "eval_textures": self.eval_textures}
        if self.data.startswith("kubric:"):
            folders["data"] = self.data.split(":", 1)[1]
        for name, folder in folders.items():
            if folder is not None and not Path(folder).is_dir():
                raise TaptrError(f"{name} folder not found: {folder}")
        if self.init_weights is not None and not Path(self.init_weights).is_file():
            raise TaptrError(f"init_weights file not found: {self.init_weights}")
        if self.init_backbone is not None and not Path(self.init_backbone).is_file():
            raise TaptrError(f"init_backbone file not found: {self.init_backbone}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return dataclass_from_dict(cls, values, "training settings")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    """What `Trainer.run` returns: the step reached, the last logged values, the last eval."""

    step: int
    interrupted: bool
    last_log: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)


def seed_global_generators(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (dropout draws from torch's)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def config_differences(saved: dict, current: dict, names: Sequence[str]) -> list[str]:
    """'name: saved -> current' for each named field that differs (JSON-normalised)."""
    def normalise(value):
        return json.loads(json.dumps(value))

    return [f"{name}: {saved.get(name)!r} -> {current.get(name)!r}" for name in names
            if normalise(saved.get(name)) != normalise(current.get(name))]


class Trainer:
    """Builds everything a run needs from a `TrainConfig`, then `run()` trains.

    clip_source: `index -> TrackingSample` for this process (default: from `config.data`,
    seeded by (seed, rank)). eval_samples: the held-out clips (default: synthetic clips from a
    seed no training process uses, textures from `eval_textures`). model: a prebuilt network
    (default: `build_model(preset)`). All three exist for tests and custom pipelines.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, *,
                 clip_source: Callable[[int], object] | None = None,
                 eval_samples: Sequence | None = None, model: nn.Module | None = None,
                 context: DistributedContext | None = None):
        self.config = config
        self.context = context or DistributedContext.join(config.device)
        self.device = self.context.device
        self.out = Path(config.out)
        self.stop_requested = False
        self._check_run_folder(resume)
        checkpoint = ckpt.load_checkpoint(self.out / "last.pt") if resume else None
        if checkpoint is not None:
            self._check_resume_compatible(checkpoint)

        if model is not None:
            self.model_config: ModelConfig = model.config
        elif checkpoint is not None:  # the network the run started with, even if presets moved
            self.model_config = ModelConfig.from_dict(checkpoint["model_config"])
        else:
            self.model_config = get_preset(config.preset)
        seed_global_generators(config.seed)  # identical initial weights on every rank
        self.model = model if model is not None else self._build_model()
        if config.init_weights and checkpoint is None:
            self._load_initial_weights(config.init_weights)
        if config.init_backbone and checkpoint is None:
            from taptr.training.pretrained import load_backbone_weights

            report = load_backbone_weights(self.model, config.init_backbone)
            loaded = count(len(report["loaded"]), "entry", "entries")
            self._print(f"backbone initialised from {config.init_backbone}: {loaded}, "
                        f"{len(report['skipped'])} skipped")
        self._freeze(config)
        self.model.to(self.device).train()
        self.ddp_model = self._wrap_distributed(self.model)

        self.ema = ModelEma(self.model, config.ema_decay, config.ema_warmup)
        self.optimizer = build_optimizer(self.model, config.lr, config.lr_backbone,
                                         config.weight_decay, config.optimizer)
        self.schedule = LrSchedule(config.schedule, config.steps, config.warmup_steps,
                                   config.lr_milestones, config.lr_gamma, config.min_lr_factor)
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.autocast_dtype = resolve_precision(config.amp, self.device)
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.autocast_dtype == torch.float16 else None)
        self.loss_weights = LossWeights(apu=config.apu_loss_weight,
                                        visibility=config.visibility_loss_weight,
                                        layers=config.loss_layers,
                                        focal_alpha=config.focal_alpha)
        self.location_cap = config.loss_cap_px / max(max(self.model_config.input_size) - 1, 1)

        self.clip_source = clip_source
        self.eval_samples = eval_samples
        self.step = 0
        self.skipped_steps = 0
        self.wall_time = 0.0
        self.cpu_time = 0.0
        self.best_aj = -math.inf
        self.step_lrs: dict[str, float] = {}
        self.data_seed = derive_seed(config.seed, "train-data", self.context.rank)
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            seed_global_generators(derive_seed(config.seed, "train-rng", self.context.rank))
        self._boundary_rng = ckpt.capture_rng_state()

    # ------------------------------------------------------------------ setup helpers
    def _freeze(self, config: TrainConfig) -> None:
        """No gradient for the backbone when lr_backbone is 0 (and no backward through it), and
        for every parameter outside `train_only` when it is given."""
        matched = set()
        # Prefixes of older parameter names (e.g. 'decoder.correlation') still select.
        current = {prefix: self.model.upgrade_key(prefix) for prefix in config.train_only}
        for name, parameter in self.model.named_parameters():
            prefixes = {prefix for prefix in config.train_only
                        if name.startswith(current[prefix])}
            matched |= prefixes
            outside = bool(config.train_only) and not prefixes
            if (config.lr_backbone == 0 and "backbone" in name) or outside:
                parameter.requires_grad_(False)
        unmatched = sorted(set(config.train_only) - matched)
        if unmatched:
            raise TaptrError(f"train_only: no parameter name starts with {unmatched}")

    def _print(self, message: str) -> None:
        """A progress message (main process only) through `logging` (the CLI shows them)."""
        if self.context.is_main:
            logger.info(message)

    def _load_initial_weights(self, path: str) -> None:
        """Start from a full set of our weights (fine-tuning); the config must match."""
        from taptr.weights import read_weights_config
        from safetensors.torch import load_file

        stored = read_weights_config(path)
        if stored.to_dict() != self.model_config.to_dict():
            raise TaptrError(f"{path} holds a {stored.name!r} model that differs from the "
                             f"{self.model_config.name!r} preset being trained")
        state = {k: v.float() for k, v in load_file(path).items()}
        load_state_strict(self.model, state)
        self._print(f"weights initialised from {path}")

    def _build_model(self) -> nn.Module:
        from taptr.models import build_model

        return build_model(self.model_config)

    def _wrap_distributed(self, model: nn.Module) -> nn.Module:
        if not self.context.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                   find_unused_parameters=True)

    def _check_run_folder(self, resume: bool) -> None:
        last = self.out / "last.pt"
        if resume and not last.is_file():
            raise TaptrError(f"cannot resume: no checkpoint at {last}")
        if not resume and last.is_file():
            raise TaptrError(f"{self.out} already holds a run; pass --resume to continue it "
                             "or choose another --out")
        if self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.context.barrier()

    def _check_resume_compatible(self, checkpoint: dict) -> None:
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise TaptrError(f"{self.out / 'last.pt'} has an unknown format "
                             f"{checkpoint.get('format')!r}")
        # A run saved before a setting existed trained with that setting's default.
        saved = {**TrainConfig().to_dict(), **checkpoint["train_config"]}
        if saved["optimizer"] != self.config.optimizer:
            raise TaptrError(f"cannot resume: the run trained with optimizer "
                             f"{saved['optimizer']!r}, not {self.config.optimizer!r}; start a "
                             "new run with --init-weights")
        fixed = config_differences(saved, self.config.to_dict(), FIXED_ON_RESUME)
        if fixed:
            raise TaptrError("cannot resume with different " + "; ".join(fixed))
        changed = config_differences(saved, self.config.to_dict(),
                                     [n for n in saved if n not in FIXED_ON_RESUME])
        if changed:
            self._print("resuming with changed settings: " + "; ".join(changed))

    # ------------------------------------------------------------------ state
    def _checkpoint_state(self, rng_states: list) -> dict:
        scheduler_state = self.scheduler.state_dict()
        scheduler_state["lr_lambdas"] = [None] * len(self.optimizer.param_groups)
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler_state,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_states,
            "data": {"seed": self.config.seed, "next_index": self._first_index(self.step)},
            "train_config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "world_size": self.context.world_size,
            "skipped_steps": self.skipped_steps,
            "wall_time": self.wall_time,
            "cpu_time": self.cpu_time,
            "best_aj": self.best_aj,
        }

    def _restore(self, checkpoint: dict) -> None:
        load_state_strict(self.model, checkpoint["model"])
        self.ema.load_state_dict(checkpoint["ema"])
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError as error:
            raise TaptrError(f"cannot resume: the optimizer no longer matches ({error}); "
                             "lr_backbone 0 (frozen backbone), train_only and the optimizer "
                             "cannot be switched on resume")
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self._apply_hyperparameters(int(checkpoint["step"]))
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.step = int(checkpoint["step"])
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        self.wall_time = float(checkpoint.get("wall_time", 0.0))
        self.cpu_time = float(checkpoint.get("cpu_time", 0.0))
        self.best_aj = float(checkpoint.get("best_aj", -math.inf))
        rng_states = checkpoint["rng"]
        if len(rng_states) == self.context.world_size:
            ckpt.restore_rng_state(rng_states[self.context.rank])
        else:
            self._print(f"world size changed ({len(rng_states)} -> {self.context.world_size}): "
                        "random streams restart")
            seed_global_generators(derive_seed(self.config.seed, "train-rng", self.context.rank,
                                               self.step))

    def _apply_hyperparameters(self, step: int) -> None:
        """Learning rates and weight decay of the current config at `step` (a resumed run may
        change them; unchanged, this reproduces the saved values exactly)."""
        bases = []
        for group in self.optimizer.param_groups:
            base = self.config.lr_backbone if group.get("name") == "backbone" else self.config.lr
            group["initial_lr"] = base
            group["lr"] = base * self.schedule(step)
            group["weight_decay"] = self.config.weight_decay
            bases.append(base)
        self.scheduler.base_lrs = bases

    def save_checkpoint(self) -> None:
        """Write last.pt (rank 0) with every rank's random state (a collective)."""
        rng_states = self.context.gather(self._boundary_rng)
        if self.context.is_main:
            ckpt.save_checkpoint(self.out / "last.pt", self._checkpoint_state(rng_states))
        self.context.barrier()

    def export_ema(self, name: str = "ema.safetensors") -> Path | None:
        """EMA weights as safetensors with the model config (rank 0 only)."""
        if not self.context.is_main:
            return None
        from taptr.weights import save_weights

        metadata = {"step": str(self.step), "train_config": json.dumps(self.config.to_dict())}
        return save_weights(self.ema.module, self.out / name, extra_metadata=metadata)

    def _write_config(self) -> None:
        if not self.context.is_main:
            return
        resolved = {
            "train": self.config.to_dict(),
            "model": self.model_config.to_dict(),
            "world_size": self.context.world_size,
            "clips_per_step": self.clips_per_step,
            "device": str(self.device),
            "autocast": str(self.autocast_dtype) if self.autocast_dtype else "none",
            "torch": torch.__version__,
        }
        (self.out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")

    # ------------------------------------------------------------------ data
    @property
    def clips_per_step(self) -> int:
        return self.config.batch * self.config.grad_accum * self.context.world_size

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model_config.input_size)

    def _first_index(self, step: int) -> int:
        """Index (in this process's clip stream) of the first clip of optimizer step `step`."""
        return step * self.config.grad_accum * self.config.batch

    def _data_device(self) -> torch.device:
        if self.config.data_device != "auto":
            return torch.device(self.config.data_device)
        return self.device if self.config.workers == 0 else torch.device("cpu")

    def _make_clip_source(self):
        if self.clip_source is None:
            from taptr.training.sources import build_clip_source

            self.clip_source = build_clip_source(self.config, self.model_config,
                                                 self.data_seed, self._data_device())
        return self.clip_source

    def _make_eval_samples(self) -> dict[str, Sequence]:
        """The validation sets (name -> clips), made once; the global generators are left
        untouched. Clips given as a plain sequence form one set named 'heldout'."""
        if self.eval_samples is not None and not isinstance(self.eval_samples, Mapping):
            self.eval_samples = {"heldout": list(self.eval_samples)}
        if self.eval_samples is None:
            from taptr.training.sources import build_eval_samples

            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                self.eval_samples = build_eval_samples(self.config, self.model_config,
                                                       self._data_device())
        return self.eval_samples

    # ------------------------------------------------------------------ one step
    def _micro_batch(self, batch: dict, last: bool, sums: dict) -> None:
        sync = (contextlib.nullcontext() if last or not self.context.enabled
                else self.ddp_model.no_sync())
        with sync:
            with autocast(self.device, self.autocast_dtype):
                output = self.ddp_model(batch["video"], batch["query_points"],
                                        batch["query_frames"], return_layers=True)
            loss, parts = tracking_loss(output, batch, self.loss_weights, self.location_cap,
                                        self.config.visibility_target_px,
                                        self.model_config.input_size[::-1])
            scaled = loss / self.config.grad_accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        sums["loss"] = sums.get("loss", 0.0) + loss.detach()
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value

    def _optimizer_step(self) -> torch.Tensor:
        """Clip, step (unless the gradient is not finite), schedule, EMA. Returns the norm."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step on inf/NaN itself
            self.scaler.update()
        elif torch.isfinite(grad_norm):
            self.optimizer.step()
        else:
            self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.step_lrs = {group.get("name", str(i)): group["lr"]
                         for i, group in enumerate(self.optimizer.param_groups)}
        self.scheduler.step()
        self.ema.update(self.model)
        return grad_norm.detach()

    # ------------------------------------------------------------------ loop
    def request_stop(self) -> None:
        """Finish the current optimizer step, save a checkpoint and return from `run`."""
        self.stop_requested = True

    def _log_columns(self) -> list[str]:
        parts = loss_part_names(self.model_config.decoder_layers)
        return (["step", "wall_s", "cpu_s", "clips_seen", "lr", "lr_backbone", "loss"] + parts
                + ["grad_norm", "steps_per_s", "clips_per_s", "skipped"]
                + [f"eval_{name}" for name in METRIC_KEYS]
                + [f"eval_{name}" for name in self._per_set_keys()])

    def _eval_set_names(self) -> list[str]:
        if self.eval_samples is None:
            return list(self.config.eval_sets)
        if isinstance(self.eval_samples, Mapping):
            return list(self.eval_samples)
        return ["heldout"]

    def _per_set_keys(self) -> list[str]:
        """Metric names per validation set ('easy_AJ', ...) when there is more than one."""
        names = self._eval_set_names()
        if len(names) < 2:
            return []
        return [f"{name}_{metric}" for name in names for metric in METRIC_KEYS]

    def _write_baselines(self) -> None:
        """baselines.json: static/lk/dis scores on the validation sets (once per run folder)."""
        path = self.out / "baselines.json"
        if path.is_file() or not self.context.is_main:
            return
        from taptr.training.curves import baseline_scores

        scores = {name: baseline_scores(samples)
                  for name, samples in self._make_eval_samples().items()}
        path.write_text(json.dumps(scores, indent=2) + "\n")
        for name, by_tracker in scores.items():
            self._print(f"validation set {name}: " + ", ".join(
                f"{tracker} AJ {values['AJ']:.3f}" for tracker, values in by_tracker.items()))

    def _evaluate(self) -> dict[str, float]:
        """Mean AJ, delta_avg, OA over the validation sets (and per set when several)."""
        sets = self._make_eval_samples()
        per_set = {name: evaluate_samples(self.ema.module, samples, self.input_size, self.device,
                                          self.autocast_dtype, self.config.eval_batch)
                   for name, samples in sets.items()}
        metrics = {key: float(np.mean([m[key] for m in per_set.values()])) for key in METRIC_KEYS}
        if len(per_set) > 1:
            for name, values in per_set.items():
                metrics.update({f"{name}_{key}": value for key, value in values.items()})
        if metrics["AJ"] > self.best_aj:
            self.best_aj = metrics["AJ"]
            self.export_ema("best.safetensors")
        return metrics

    def run(self, until_step: int | None = None) -> TrainResult:
        """Train up to `config.steps` (or `until_step`, for a time-boxed session)."""
        config = self.config
        final_step = min(config.steps, until_step) if until_step is not None else config.steps
        main = self.context.is_main
        log = CsvLog(self.out / "log.csv", self._log_columns(),
                     resume_step=self.step if self.step > 0 else None) if main else None
        board = TensorBoardLog(self.out / "tensorboard") if main else None
        self._write_config()
        if main and config.eval_every:
            self._make_eval_samples()
            if self.eval_samples is not None and set(self.eval_samples) <= set(
                    self.config.eval_sets) and config.data == "synthetic":
                self._write_baselines()
        session_start = time.perf_counter()
        deadline = session_start + 60 * config.max_minutes if config.max_minutes else math.inf
        batches = batch_stream(self._make_clip_source(), config.batch, self.input_size,
                               self._first_index(self.step), self.device, config.workers,
                               loader_seed=self.data_seed)
        progress = tqdm(total=config.steps, initial=self.step, disable=not (main and config.progress),
                        dynamic_ncols=True, desc=f"train {self.out.name}", unit="step")
        sums: dict = {}
        micro_batches = 0
        interval_start, interval_steps = time.perf_counter(), 0
        last_log: dict = {}
        last_eval: dict = {}
        grad_norm = torch.zeros(())
        if config.eval_every and main and self.step == 0:  # the curve starts at step 0
            last_eval = self._evaluate()
            log.write({"step": 0, "wall_s": 0.0, "cpu_s": 0.0, "clips_seen": 0,
                       **{f"eval_{name}": value for name, value in last_eval.items()}})
            self._print("step 0: " + ", ".join(f"{name} {value:.4f}"
                                               for name, value in last_eval.items()))
        try:
            while self.step < final_step:
                step_start = time.perf_counter()
                cpu_start = time.process_time()
                for micro in range(config.grad_accum):
                    self._micro_batch(next(batches), micro == config.grad_accum - 1, sums)
                    micro_batches += 1
                grad_norm = self._optimizer_step()
                self.step += 1
                interval_steps += 1
                self.wall_time += time.perf_counter() - step_start
                self.cpu_time += time.process_time() - cpu_start
                self._boundary_rng = ckpt.capture_rng_state()
                progress.update(1)

                row: dict = {}
                if self.step % config.log_every == 0 or self.step == final_step:
                    elapsed = time.perf_counter() - interval_start
                    row = self._log_values(sums, micro_batches, grad_norm,
                                           interval_steps / max(elapsed, 1e-9))
                    sums, micro_batches = {}, 0
                    interval_start, interval_steps = time.perf_counter(), 0
                    progress.set_postfix(loss=f"{row['loss']:.4f}",
                                         clips_s=f"{row['clips_per_s']:.2f}")
                    last_log = row
                time_up = time.perf_counter() > deadline
                final_validation = time_up and self.step % max(config.eval_every, 1) != 0
                if config.eval_every and main and (self.step % config.eval_every == 0
                                                   or final_validation):
                    last_eval = self._evaluate()
                    row = row or {"step": self.step, "wall_s": self.wall_time,
                                  "cpu_s": self.cpu_time,
                                  "clips_seen": self.step * self.clips_per_step}
                    row.update({f"eval_{name}": value for name, value in last_eval.items()})
                    self._print(f"step {self.step}: " + ", ".join(
                        f"{name} {value:.4f}" for name, value in last_eval.items()))
                if row and main:
                    log.write(row)
                    board.write(self.step, self._board_values(row))
                if self.step % config.ckpt_every == 0 and self.step < final_step:
                    self.save_checkpoint()
                if self.step % config.export_every == 0 and self.step < final_step:
                    self.export_ema()
                if self.context.any(self.stop_requested or time_up):
                    if time_up:
                        self._print(f"max_minutes {config.max_minutes:g} reached at step "
                                    f"{self.step}")
                    break
        finally:
            progress.close()
            if board is not None:
                board.close()
        self.save_checkpoint()
        self.export_ema()
        return TrainResult(self.step, self.stop_requested, last_log, last_eval)

    def _log_values(self, sums: dict, micro_batches: int, grad_norm: torch.Tensor,
                    steps_per_s: float) -> dict:
        means = {name: float(value) / max(micro_batches, 1) for name, value in sums.items()}
        return {"step": self.step, "wall_s": self.wall_time, "cpu_s": self.cpu_time,
                "clips_seen": self.step * self.clips_per_step, "lr": self.step_lrs.get("main"),
                "lr_backbone": self.step_lrs.get("backbone"), **means, "grad_norm": float(grad_norm),
                "steps_per_s": steps_per_s, "clips_per_s": steps_per_s * self.clips_per_step,
                "skipped": self.skipped_steps}

    @staticmethod
    def _board_values(row: dict) -> dict[str, float]:
        values = {}
        for name, value in row.items():
            if name == "step" or value is None:
                continue
            if name.startswith("eval_"):
                values[f"eval/{name[5:]}"] = value
            elif name.startswith(("loc", "apu", "vis", "loss")):
                values[f"loss/{name}"] = value
            else:
                values[f"train/{name}"] = value
        return values
