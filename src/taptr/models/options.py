"""Tracking options: how a network tracks, apart from what it is (`ModelConfig`).

Our additions on or off and their settings, the point chunking, the official long-video
padding and the kernels. `Tracker`, `Tracker.stream`, `taptr track`, `taptr eval` and the web
app accept them; a weights file stores only their defaults (`TAPTRv2.default_options`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from taptr.errors import TaptrError
from taptr.flow import DIS_PRESETS

# OpenCV's DIS optical flow presets (the flow prior's `flow_preset`).
FLOW_PRESETS = DIS_PRESETS
# ModelConfig fields of files written before the options existed -> option names.
LEGACY_CONFIG_FIELDS = {"correlation_template_update": "template_update",
                        "motion_correction_px": "motion_correction_px",
                        "motion_correction_neighbours": "motion_correction_neighbours"}


@dataclass(frozen=True)
class TrackingOptions:
    """How to track (every field has a default; `replace` or `with_overrides` to change).

    flow_prior: our dense optical-flow prior (docs/flow_prior.md): frames no window has
        decoded yet start from the previous position moved by DIS optical flow, not a copy.
    flow_preset: OpenCV's DIS preset of that flow: 'ultrafast', 'fast' or 'medium'.
    flow_consistency: also compute the backward flow and keep each step's forward-backward
        error (pixels of the frames the flow runs on) in the prior's session, a reliability
        signal (twice the flow).
    flow_follows_occluded: with the flow prior, a point the model calls occluded in a frame
        takes the position the flow gave it there (not the decoder's guess); where an occluder
        passes over the point, the flow there is the occluder's (docs/flow_prior.md).
    flow_anchor: with the flow prior, where a flow step passes the forward-backward check, the
        flow's position replaces the decoder's when its gray patch matches the point's
        appearance at least as well (the query frame's patch when the two are near, the frame
        before's when far apart); elsewhere the decoder's position stands and the flow
        continues from it (docs/flow_prior.md, "The flow as the anchor").
    flow_resolution: the longest side (pixels) of the frames the flow prior runs on: 0 for
        the network's input frames (256x256 for `small`), N for the video's own frames in gray,
        scaled down to at most N pixels (never up; the video's aspect ratio kept). Training
        passes no video frames: its flow runs on the network's input.
    correlation: our local correlation update (docs/correlation.md), where the network has
        one; off gives the paper's decoder.
    template_update: weight w of a point's recent appearance in its correlation templates,
        refreshed after each window (0: off, the query frame's templates only); in [0, 1].
    motion_correction_px: neighbour motion correction threshold in input pixels
        (docs/motion_correction.md; 0: off).
    motion_correction_neighbours: neighbours K of that correction (at least 1).
    point_chunk: points per chunk inside the model (memory; results unchanged; None: auto).
    long_video_padding: the official evaluation's long-video content padding (None: as the
        network's `official_compat`).
    kernels: the kernels a tracker prepares the network with (`taptr.models.kernels.KERNELS`;
        None: the fastest for the device).
    Raises `TaptrError` for values out of range.
    """

    flow_prior: bool = False
    flow_preset: str = "fast"
    flow_consistency: bool = False
    flow_follows_occluded: bool = False
    flow_anchor: bool = False
    flow_resolution: int = 0
    correlation: bool = True
    template_update: float = 0.0
    motion_correction_px: float = 0.0
    motion_correction_neighbours: int = 8
    point_chunk: int | None = None
    long_video_padding: bool | None = None
    kernels: str | None = None

    def __post_init__(self) -> None:
        if self.flow_preset not in FLOW_PRESETS:
            raise TaptrError(f"flow_preset must be one of {FLOW_PRESETS}, got "
                             f"{self.flow_preset!r}")
        if not 0.0 <= self.template_update <= 1.0:
            raise TaptrError(f"template_update must be in [0, 1], got {self.template_update}")
        if self.motion_correction_px < 0:
            raise TaptrError("motion_correction_px must not be negative, got "
                             f"{self.motion_correction_px}")
        if self.motion_correction_neighbours < 1:
            raise TaptrError("motion_correction_neighbours must be at least 1, got "
                             f"{self.motion_correction_neighbours}")
        if self.flow_resolution < 0:
            raise TaptrError(f"flow_resolution must not be negative, got {self.flow_resolution}")
        if self.point_chunk is not None and self.point_chunk < 1:
            raise TaptrError(f"point_chunk must be positive, got {self.point_chunk}")
        if self.kernels is not None:
            from taptr.models.kernels import check_kernels

            check_kernels(self.kernels)

    def replace(self, **changes) -> "TrackingOptions":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TaptrError(f"unknown tracking options: {sorted(unknown)}; known: "
                             f"{sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    def plain(self) -> "TrackingOptions":
        """These options with every addition of ours off: the paper's TAPTRv2 stream."""
        return self.replace(flow_prior=False, correlation=False, template_update=0.0,
                            motion_correction_px=0.0)

    def with_overrides(self, items: list[str]) -> "TrackingOptions":
        """These options with "key=value" strings applied (the CLI's `--option`); values are
        parsed by the field's type (booleans: on/off, true/false, 1/0; "none" for None).
        Raises `TaptrError` for an unknown key or a value of the wrong type."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        changes = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in types:
                raise TaptrError(f"--option expects KEY=VALUE with KEY one of {sorted(types)}, "
                                 f"got {item!r}")
            changes[key] = _parse(key, types[key], text.strip())
        return self.replace(**changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "TrackingOptions":
        return cls().replace(**values)

    @classmethod
    def from_legacy_config(cls, config: dict) -> "TrackingOptions":
        """The defaults stored in an older file's model config (its tracking fields)."""
        return cls.from_dict({new: config[old] for old, new in LEGACY_CONFIG_FIELDS.items()
                              if old in config})


def _parse(key: str, kind: str, text: str):
    lowered = text.lower()
    if "None" in kind and lowered == "none":
        return None
    try:
        if kind.startswith("bool"):
            if lowered in ("on", "true", "yes", "1"):
                return True
            if lowered in ("off", "false", "no", "0"):
                return False
            raise ValueError(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("int"):
            return int(text)
        return text
    except ValueError:
        raise TaptrError(f"--option {key}: cannot read {text!r} as {kind}") from None
