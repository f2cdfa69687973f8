"""The training loop: `Trainer` runs a `TrainConfig` (docs/training.md).

One optimizer step (`train_step`) = `optim.grad_accum` micro-batches of `data.batch` clips on
each of `world_size` processes; each micro-batch is `next_batch` -> `forward` (autocast, bf16
on CUDA by default) -> `criterion` (`losses.TrackingCriterion`, float32) -> `backward` (DDP
averages gradients across processes); then `optimizer_step` (clipping, AdamW, schedule,
EMA). After each step (`after_step`): a log row every `run.log_every` steps, validation of the
EMA model every `eval.every` steps (`validator.Validator`), `last.pt` every
`run.ckpt_every` steps (exact resume), the EMA weights as safetensors every
`run.export_every` steps.

A run stops at `run.steps`, at `until_step`, or once `run.max_minutes` of wall time have
passed in this session, always with a checkpoint and an EMA export.

Run folder (`run.out`): config.json (resolved train + model config), log.csv (losses, CPU
seconds, clips seen, validation metrics), baselines.json (static/lk/dis on the validation
sets), last.pt, ema.safetensors (latest EMA), best.safetensors (best mean validation AJ),
tensorboard/ if installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from taptr.config import ModelConfig
from taptr.data.seeding import derive_seed
from taptr.device import autocast, resolve_precision
from taptr.distributed import DistributedContext
from taptr.errors import TaptrError
from taptr.io.atomic import check_can_create_folder, write_text_atomic
from taptr.models.registry import get_preset
from taptr.training import checkpoint as ckpt
from taptr.training.config import FIXED_ON_RESUME, TrainConfig
from taptr.training.data import batch_stream
from taptr.training.ema import ModelEma
from taptr.training.losses import TrackingCriterion, loss_part_names
from taptr.training.optim import LrSchedule, build_optimizer, build_scheduler
from taptr.training.run_log import LossMeter, RunLog
from taptr.training.setup import prepare_model
from taptr.training.validator import Validator

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "taptr-train-1"
LOG_COLUMNS = ["step", "wall_s", "cpu_s", "clips_seen", "lr", "lr_backbone", "loss"]
RATE_COLUMNS = ["grad_norm", "steps_per_s", "clips_per_s", "skipped"]


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
    """'name: saved -> current' for each named field that differs (JSON-normalised); both
    dicts are `TrainConfig.flat()`."""
    def normalise(value):
        return json.loads(json.dumps(value))

    return [f"{name}: {saved.get(name)!r} -> {current.get(name)!r}" for name in names
            if normalise(saved.get(name)) != normalise(current.get(name))]


class Trainer:
    """Builds everything a run needs from a `TrainConfig`, then `run()` trains.

    clip_source: `index -> TrackingSample` for this process (default: from `config.data`,
    seeded by (seed, rank)). eval_samples: the validation clips, name -> clips or one
    sequence (default: the sets of `config.eval`). model: a prebuilt network (default:
    `build_model(preset)`). All three exist for tests and custom pipelines.
    Raises TaptrError for a bad config, a missing input, or a run folder that does not fit
    `resume`, before building anything.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, *,
                 clip_source: Callable[[int], object] | None = None,
                 eval_samples: Sequence | dict | None = None, model: nn.Module | None = None,
                 context: DistributedContext | None = None):
        config.check()
        config.check_inputs()
        self.config = config
        self.context = context or DistributedContext.join(config.run.device)
        self.device = self.context.device
        self.out = Path(config.run.out)
        self.stop_requested = False
        self._check_run_folder(resume)
        checkpoint = ckpt.load_checkpoint(self.out / "last.pt") if resume else None
        if checkpoint is not None:
            self._check_resume_compatible(checkpoint)
        self.model_config = self._model_config(model, checkpoint)
        seed_global_generators(config.run.seed)  # identical initial weights on every rank
        self.model = prepare_model(config, self.model_config, model, pretrained=checkpoint is None)
        self.model.to(self.device).train()
        self.ddp_model = self._wrap_distributed(self.model)
        self._build_optimisation()
        self.criterion = TrackingCriterion(self.model_config.input_size,
                                           location_cap_px=config.loss.location_cap_px)
        self.clip_source = clip_source
        self.validator = Validator(config, self.model_config, eval_samples, self.device,
                                   self.autocast_dtype, self._data_device())
        self.step, self.skipped_steps, self.wall_time, self.cpu_time = 0, 0, 0.0, 0.0
        self.best_aj = -math.inf
        self.step_lrs: dict[str, float] = {}
        self.data_seed = derive_seed(config.run.seed, "train-data", self.context.rank)
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            seed_global_generators(derive_seed(config.run.seed, "train-rng", self.context.rank))
        self._boundary_rng = ckpt.capture_rng_state()

    # ------------------------------------------------------------------ setup
    def _model_config(self, model: nn.Module | None, checkpoint: dict | None) -> ModelConfig:
        if model is not None:
            return model.config
        if checkpoint is not None:  # the network the run started with, even if presets moved
            return ModelConfig.from_dict(checkpoint["model_config"])
        return get_preset(self.config.model.preset)

    def _build_optimisation(self) -> None:
        optim, run = self.config.optim, self.config.run
        self.ema = ModelEma(self.model, optim.ema_decay, optim.ema_warmup)
        self.optimizer = build_optimizer(self.model, optim.lr, optim.lr_backbone,
                                         optim.weight_decay)
        self.schedule = LrSchedule(optim.schedule, run.steps, optim.warmup_steps,
                                   optim.lr_milestones, optim.lr_gamma, optim.min_lr_factor)
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.autocast_dtype = resolve_precision(run.amp, self.device)
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.autocast_dtype == torch.float16 else None)

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
            check_can_create_folder(self.out)  # one line for an unwritable place, not OSError
            self.out.mkdir(parents=True, exist_ok=True)
        self.context.barrier()

    def _check_resume_compatible(self, checkpoint: dict) -> None:
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise TaptrError(f"{self.out / 'last.pt'} has an unknown format "
                             f"{checkpoint.get('format')!r}")
        saved = TrainConfig.from_any(checkpoint["train_config"], str(self.out / "last.pt")).flat()
        current = self.config.flat()
        fixed = config_differences(saved, current, FIXED_ON_RESUME)
        if fixed:
            raise TaptrError("cannot resume with different " + "; ".join(fixed))
        changed = config_differences(saved, current, [n for n in saved if n not in FIXED_ON_RESUME])
        if changed:
            self._print("resuming with changed settings: " + "; ".join(changed))

    def _print(self, message: str) -> None:
        """A progress message (main process only) through `logging` (the CLI shows them)."""
        if self.context.is_main:
            logger.info(message)

    # ------------------------------------------------------------------ state
    def _checkpoint_state(self, rng_states: list) -> dict:
        scheduler_state = self.scheduler.state_dict()
        scheduler_state["lr_lambdas"] = [None] * len(self.optimizer.param_groups)
        return {
            "format": CHECKPOINT_FORMAT, "step": self.step,
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": scheduler_state,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_states,
            "data": {"seed": self.config.run.seed, "next_index": self._first_index(self.step)},
            "train_config": self.config.to_dict(), "model_config": self.model_config.to_dict(),
            "world_size": self.context.world_size, "skipped_steps": self.skipped_steps,
            "wall_time": self.wall_time, "cpu_time": self.cpu_time, "best_aj": self.best_aj,
        }

    def _restore(self, checkpoint: dict) -> None:
        from taptr.models.state_dict import load_state_strict

        load_state_strict(self.model, checkpoint["model"])
        self.ema.load_state_dict(checkpoint["ema"])
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError as error:
            raise TaptrError(f"cannot resume: the optimizer no longer matches ({error}); "
                             "optim.lr_backbone 0 (frozen backbone) and optim.train_only "
                             "cannot be switched on resume") from None
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
            seed_global_generators(derive_seed(self.config.run.seed, "train-rng",
                                               self.context.rank, self.step))

    def _apply_hyperparameters(self, step: int) -> None:
        """Learning rates and weight decay of the current config at `step` (a resumed run may
        change them; unchanged, this reproduces the saved values exactly)."""
        optim = self.config.optim
        bases = []
        for group in self.optimizer.param_groups:
            base = optim.lr_backbone if group.get("name") == "backbone" else optim.lr
            group["initial_lr"] = base
            group["lr"] = base * self.schedule(step)
            group["weight_decay"] = optim.weight_decay
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
            "train": self.config.to_dict(), "model": self.model_config.to_dict(),
            "world_size": self.context.world_size, "clips_per_step": self.clips_per_step,
            "device": str(self.device),
            "autocast": str(self.autocast_dtype) if self.autocast_dtype else "none",
            "torch": torch.__version__,
        }
        write_text_atomic(self.out / "config.json", json.dumps(resolved, indent=2) + "\n")

    # ------------------------------------------------------------------ data
    @property
    def clips_per_step(self) -> int:
        return self.config.data.batch * self.config.optim.grad_accum * self.context.world_size

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model_config.input_size)

    def _first_index(self, step: int) -> int:
        """Index (in this process's clip stream) of the first clip of optimizer step `step`."""
        return step * self.config.optim.grad_accum * self.config.data.batch

    def _data_device(self) -> torch.device:
        if self.config.data.device != "auto":
            return torch.device(self.config.data.device)
        return self.device if self.config.data.workers == 0 else torch.device("cpu")

    def _make_clip_source(self):
        if self.clip_source is None:
            from taptr.training.sources import build_clip_source

            self.clip_source = build_clip_source(self.config, self.model_config,
                                                 self.data_seed, self._data_device())
        return self.clip_source

    def _batches(self):
        """This process's batches from the current step on (`data.batch_stream`)."""
        return batch_stream(self._make_clip_source(), self.config.data.batch, self.input_size,
                            self._first_index(self.step), self.device, self.config.data.workers,
                            loader_seed=self.data_seed)

    # ------------------------------------------------------------------ one step
    def next_batch(self) -> dict[str, torch.Tensor]:
        return next(self.batches)

    def forward(self, batch: dict[str, torch.Tensor]):
        """The network on a batch, every decoder layer's outputs (`TrackOutput`)."""
        with autocast(self.device, self.autocast_dtype):
            return self.ddp_model(batch["video"], batch["query_points"], batch["query_frames"],
                                  return_layers=True)

    def backward(self, loss: torch.Tensor) -> None:
        scaled = loss / self.config.optim.grad_accum
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()

    def _gradient_sync(self, last: bool):
        """DDP averages gradients on the last micro-batch of a step only."""
        if last or not self.context.enabled:
            return contextlib.nullcontext()
        return self.ddp_model.no_sync()

    def train_step(self) -> None:
        """One optimizer step: `optim.grad_accum` micro-batches, then `optimizer_step`."""
        step_start, cpu_start = time.perf_counter(), time.process_time()
        for micro in range(self.config.optim.grad_accum):
            batch = self.next_batch()
            with self._gradient_sync(last=micro == self.config.optim.grad_accum - 1):
                loss, parts = self.criterion(self.forward(batch), batch)
                self.backward(loss)
            self.meter.add(loss, parts)
        self.grad_norm = self.optimizer_step()
        self.step += 1
        self.wall_time += time.perf_counter() - step_start
        self.cpu_time += time.process_time() - cpu_start
        self._boundary_rng = ckpt.capture_rng_state()

    def optimizer_step(self) -> torch.Tensor:
        """Clip, step (unless the gradient is not finite), schedule, EMA. Returns the norm."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else math.inf
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

    # ------------------------------------------------------------------ after a step
    def after_step(self, final_step: int, time_up: bool) -> dict:
        """Log, validate, checkpoint and export as due after a step; returns the log row."""
        run = self.config.run
        row = self.log_row() if self.step % run.log_every == 0 or self.step == final_step else {}
        every = self.config.eval.every
        if every and (self.step % every == 0 or time_up):
            row = {**(row or self._time_row()), **self.validate()}
        if self.context.is_main:
            self.log.write(row)
        if self.step % run.ckpt_every == 0 and self.step < final_step:
            self.save_checkpoint()
        if self.step % run.export_every == 0 and self.step < final_step:
            self.export_ema()
        return row

    def _time_row(self) -> dict:
        return {"step": self.step, "wall_s": self.wall_time, "cpu_s": self.cpu_time,
                "clips_seen": self.step * self.clips_per_step}

    def log_row(self) -> dict:
        """The interval's mean losses, learning rates, gradient norm and speed."""
        elapsed = time.perf_counter() - self.interval_start
        steps_per_s = (self.step - self.interval_first_step) / max(elapsed, 1e-9)
        self.interval_start, self.interval_first_step = time.perf_counter(), self.step
        row = {**self._time_row(), "lr": self.step_lrs.get("main"),
               "lr_backbone": self.step_lrs.get("backbone"), **self.meter.means(),
               "grad_norm": float(self.grad_norm), "steps_per_s": steps_per_s,
               "clips_per_s": steps_per_s * self.clips_per_step, "skipped": self.skipped_steps}
        self.last_log = row
        self.progress.set_postfix(loss=f"{row['loss']:.4f}", clips_s=f"{row['clips_per_s']:.2f}")
        return row

    def validate(self) -> dict[str, float]:
        """Score the EMA model (rank 0; other ranks return {}), keep the best, print it."""
        if not self.context.is_main:
            return {}
        self.last_eval = self.validator.evaluate(self.ema.module)
        if self.last_eval["AJ"] > self.best_aj:
            self.best_aj = self.last_eval["AJ"]
            self.export_ema("best.safetensors")
        self._print(f"step {self.step}: " + ", ".join(f"{name} {value:.4f}"
                                                      for name, value in self.last_eval.items()))
        return {f"eval_{name}": value for name, value in self.last_eval.items()}

    # ------------------------------------------------------------------ the loop
    def request_stop(self) -> None:
        """Finish the current optimizer step, save a checkpoint and return from `run`."""
        self.stop_requested = True

    def _start_session(self) -> None:
        """Log files, config.json, baselines, the batch stream and the step-0 validation."""
        main = self.context.is_main
        columns = (LOG_COLUMNS + loss_part_names(self.model_config.decoder_layers)
                   + RATE_COLUMNS + self.validator.metric_names())
        self.log = RunLog(self.out, columns, self.step if self.step > 0 else None, main)
        self._write_config()
        if main and self.config.eval.every:
            scores = self.validator.write_baselines(self.out / "baselines.json")
            for name, by_tracker in (scores or {}).items():
                self._print(f"validation set {name}: " + ", ".join(
                    f"{tracker} AJ {values['AJ']:.3f}" for tracker, values in by_tracker.items()))
        self.batches = self._batches()
        self.meter, self.grad_norm = LossMeter(), torch.zeros(())
        self.last_log, self.last_eval = {}, {}
        self.interval_start, self.interval_first_step = time.perf_counter(), self.step
        self.progress = tqdm(total=self.config.run.steps, initial=self.step,
                             disable=not (main and self.config.run.progress),
                             dynamic_ncols=True, desc=f"train {self.out.name}", unit="step")
        if self.config.eval.every and self.step == 0:  # the curve starts at step 0
            self.log.write({**self._time_row(), **self.validate()})

    def run(self, until_step: int | None = None) -> TrainResult:
        """Train up to `run.steps` (or `until_step`, for a time-boxed session)."""
        run = self.config.run
        final_step = min(run.steps, until_step) if until_step is not None else run.steps
        deadline = time.perf_counter() + 60 * run.max_minutes if run.max_minutes else math.inf
        self._start_session()
        try:
            while self.step < final_step:
                self.train_step()
                self.progress.update(1)
                time_up = time.perf_counter() > deadline
                self.after_step(final_step, time_up)
                if self.context.any(self.stop_requested or time_up):
                    if time_up:
                        self._print(f"max_minutes {run.max_minutes:g} reached at step "
                                    f"{self.step}")
                    break
        finally:
            self.progress.close()
            self.log.close()
        self.save_checkpoint()
        self.export_ema()
        return TrainResult(self.step, self.stop_requested, self.last_log, self.last_eval)
