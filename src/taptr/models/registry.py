"""The one registry of named models: name -> architecture (a preset), default tracking options
and, where one exists, a weights file.

    register("my-small", preset="small", weights="runs/x/weights.safetensors")
    list_models()                 # ['my-small', 'small', 'taptr-small', 'taptrv2', 'tiny']
    get_preset("small")           # a fresh ModelConfig
    taptr.create_model("small", pretrained=False)   # random weights (`taptr.loading`)
    taptr.load_model("taptr-small")                 # the bundled weights

Names without a weights file are presets to build and train (`taptrv2`: the paper's network,
whose weights are the official checkpoint the user converts or names by path; `small`: ours;
`tiny`: for tests). Named weights carry the preset of their architecture: `taptr-small`, the
bundled default. Like timm's registry, this module only holds names (no I/O, no network built);
loading is `taptr.loading` (`create_model`, `load_model`), building `taptr.models.build_model`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from taptr.config import ModelConfig, paper_config, small_config, tiny_config
from taptr.errors import TaptrError
from taptr.models.options import TrackingOptions

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_MODEL = "taptr-small"


@dataclass(frozen=True)
class ModelEntry:
    """One registered name.

    preset: the name of the architecture (an entry registered with a config factory).
    config_factory: returns a fresh `ModelConfig` of that architecture.
    options: the default tracking options of models loaded or built under this name.
    weights: the weights file (our `.safetensors`), or None for a preset without weights.
    description: one line for listings and errors.
    """

    name: str
    preset: str
    config_factory: Callable[[], ModelConfig]
    options: TrackingOptions
    weights: Path | None = None
    description: str = ""

    def config(self) -> ModelConfig:
        return self.config_factory()


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, preset: str | Callable[[], ModelConfig],
             options: TrackingOptions | None = None,
             weights: str | os.PathLike | None = None, description: str = "") -> ModelEntry:
    """Register `name`. preset: a function returning the architecture's `ModelConfig` (a new
    preset), or the name of a registered entry whose architecture (and, unless `options` is
    given, default options) it shares. options: default tracking options (None: the preset
    entry's, or `TrackingOptions()` for a new preset). weights: our `.safetensors` file (not
    opened here). Raises `TaptrError` for a name taken or an unknown preset name."""
    if name in _REGISTRY:
        raise TaptrError(f"model name {name!r} is already registered")
    if isinstance(preset, str):
        base = get_entry(preset)
        entry = ModelEntry(name, base.preset, base.config_factory,
                           options if options is not None else base.options,
                           None if weights is None else Path(weights), description)
    else:
        entry = ModelEntry(name, name, preset, options if options is not None else TrackingOptions(),
                           None if weights is None else Path(weights), description)
    _REGISTRY[name] = entry
    return entry


def list_models(pretrained: bool = False) -> list[str]:
    """The registered names, sorted (pretrained: only those with a weights file)."""
    return sorted(name for name, entry in _REGISTRY.items()
                  if not pretrained or entry.weights is not None)


def is_registered(name) -> bool:
    return isinstance(name, str) and name in _REGISTRY


def get_entry(name: str) -> ModelEntry:
    """The entry of `name`. Raises `TaptrError` naming the registered ones."""
    if not is_registered(name):
        raise TaptrError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_preset(name: str) -> ModelConfig:
    """A fresh `ModelConfig` of a registered preset (the architecture of a registered name).
    Raises `TaptrError` for an unknown name, listing the presets."""
    presets = sorted({entry.preset for entry in _REGISTRY.values()})
    if name not in presets:
        raise TaptrError(f"unknown preset {name!r}; choose one of {presets}")
    return _REGISTRY[name].config()


def default_options(preset: str) -> TrackingOptions:
    """The default tracking options of a registered name; all of our additions' settings off
    (`TrackingOptions()`) for any other name, e.g. a config built by hand."""
    entry = _REGISTRY.get(preset)
    return entry.options if entry is not None else TrackingOptions()


# The small preset's defaults: docs/flow_prior.md (flow prior), docs/correlation.md (template
# refresh) and docs/motion_correction.md (threshold).
SMALL_OPTIONS = TrackingOptions(flow_prior=True, flow_anchor=True, flow_follows_occluded=True,
                                flow_resolution=1280, template_update=0.25,
                                motion_correction_px=16.0)

register("taptrv2", paper_config,
         description="the paper's TAPTRv2 (weights: the official checkpoint, a .pth path)")
register("small", small_config, SMALL_OPTIONS, description="our CPU preset (docs/presets.md)")
register("tiny", tiny_config, description="a minute preset for unit tests")
register(DEFAULT_MODEL, "small", weights=ASSETS / "taptr_small.safetensors",
         description="the bundled weights of the small preset (the default)")
