"""Model configuration: one dataclass and the architectures of the named presets.

A `ModelConfig` fully describes a network; `to_dict`/`from_dict` round-trip it through the
metadata of our safetensors files, so a weights file alone rebuilds its model. The presets'
architectures (`paper_config`, `small_config`, `tiny_config`) are registered by name, with
their default tracking options and weights files, in the one registry `taptr.models.registry`
(`get_preset(name)`, `list_models()`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from taptr.errors import TaptrError

# Fields of ModelConfig before the tracking options moved out of it.
LEGACY_TRACKING_FIELDS = ("correlation_template_update", "motion_correction_px",
                          "motion_correction_neighbours")
BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
DECODER_MODULES = ("ca", "tsa", "sa", "ffn")


def dataclass_from_dict(cls, values: dict, what: str):
    """`cls(**values)`, refusing names that are not fields of the dataclass `cls`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise TaptrError(f"unknown {what}: {sorted(unknown)}")
    return cls(**values)


@dataclass
class ModelConfig:
    """Every hyper-parameter of a TAPTRv2 network.

    Field defaults are the paper model (`config/TAPTRv2.py` of the official code).
    """

    name: str = "taptrv2"
    backbone: str = "resnet50"
    # Backbone stages fed to the transformer (0..3 = strides 4, 8, 16, 32).
    backbone_stages: tuple[int, ...] = (0, 1, 2, 3)
    hidden_dim: int = 256
    num_heads: int = 8
    # Levels seen by the transformer; levels beyond the backbone stages are built by stride-2
    # 3x3 convolutions on the last stage (the official "extra level").
    num_levels: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 5
    encoder_points: int = 4
    decoder_points: int = 4
    ffn_dim: int = 2048
    # Temperature of the feature-map sine encoding (encoder) and of the point encoding (decoder).
    map_pe_temperature: float = 10.0
    point_pe_temperature: float = 10.0
    decoder_module_order: tuple[str, ...] = ("ca", "tsa", "sa", "ffn")
    num_vis_logits: int = 3
    # Network input (height, width). Videos are resized to this before the backbone.
    input_size: tuple[int, int] = (512, 512)
    window_size: int = 8
    window_stride: int = 4
    # Dropout on the content carried from one window to the next (training only; the official
    # code's value).
    window_update_dropout: float = 0.6
    # Reproduce the official code's quirks (docs/architecture.md, 9.2): the H/W swaps in query
    # initialisation and in the APU, and the eval-only long-video content padding. Needed only to
    # match official outputs bit for bit; for square inputs and T <= 24 it changes nothing.
    official_compat: bool = False
    # Our additions (docs/correlation.md); the paper preset leaves them off.
    # Backbone stages whose features drive the local correlation update, coarse to fine
    # (empty: no correlation update, the paper's decoder).
    correlation_stages: tuple[int, ...] = ()
    correlation_radius: int = 3
    # p > 0 adds a last correlation level on the input image: NCC of (2p+1)^2 RGB patches.
    correlation_patch: int = 0
    correlation_pixel_radius: int = 3  # search radius of that level, in input pixels
    # (How the network tracks, e.g. the template refresh and the motion correction, is not
    # architecture: `taptr.models.options.TrackingOptions`.)
    # "detr": the official initialisation; "tracking": ours, under which the untrained model
    # already tracks (taptr.models.additions.init_tracking).
    initialisation: str = "detr"

    def __post_init__(self) -> None:
        self.backbone_stages = tuple(int(s) for s in self.backbone_stages)
        self.decoder_module_order = tuple(self.decoder_module_order)
        self.correlation_stages = tuple(int(s) for s in self.correlation_stages)
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if self.backbone not in BACKBONES:
            raise TaptrError(f"unknown backbone {self.backbone!r}; choose one of {BACKBONES}")
        if self.hidden_dim % self.num_heads:
            raise TaptrError("hidden_dim must be divisible by num_heads")
        if self.num_levels < len(self.backbone_stages):
            raise TaptrError("num_levels must be at least the number of backbone stages")
        if sorted(self.decoder_module_order) != sorted(DECODER_MODULES):
            raise TaptrError(f"decoder_module_order must be a permutation of {DECODER_MODULES}")
        if any(not 0 <= s <= 3 for s in self.correlation_stages):
            raise TaptrError("correlation_stages must be backbone stages 0..3")
        if self.correlation_patch < 0:
            raise TaptrError("correlation_patch must not be negative")
        if self.correlation_radius < 1 or self.correlation_pixel_radius < 1:
            raise TaptrError("correlation_radius and correlation_pixel_radius must be at least 1")
        if self.initialisation not in ("detr", "tracking"):
            raise TaptrError("initialisation must be 'detr' or 'tracking'")
        if not 0.0 <= self.window_update_dropout < 1.0:
            raise TaptrError("window_update_dropout must be in [0, 1)")
        if self.window_stride < 1 or self.window_size < self.window_stride:
            raise TaptrError("need 1 <= window_stride <= window_size")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """The config of `values`; the tracking fields of files written before
        `TrackingOptions` (`LEGACY_TRACKING_FIELDS`) are left out (read them with
        `TrackingOptions.from_legacy_config`)."""
        values = {k: v for k, v in values.items() if k not in LEGACY_TRACKING_FIELDS}
        return dataclass_from_dict(cls, values, "model config fields")

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


def paper_config() -> ModelConfig:
    """The paper's TAPTRv2 (the field defaults: `config/TAPTRv2.py` of the official code)."""
    return ModelConfig()


def small_config() -> ModelConfig:
    """Our CPU preset.

    MobileNetV2 backbone (2.2 M parameters instead of ResNet-50's 23.5 M), 128 channels,
    4 heads, 3 levels (strides 8, 16, 32: the stride-4 level quadruples the encoder's tokens and
    measured 4x slower per frame), 1 encoder and 3 decoder layers, and a 256x256 input (TAP-Vid's
    own resolution; 384x384 measured 2.8x and 320x320 1.6x slower per frame). The encoder and
    backbone dominate the cost, so these are the knobs that matter. `docs/presets.md` has the
    measurements.
    """
    return ModelConfig(
        name="small",
        backbone="mobilenet_v2",
        backbone_stages=(1, 2, 3),
        hidden_dim=128,
        num_heads=4,
        num_levels=3,
        encoder_layers=1,
        decoder_layers=3,
        encoder_points=4,
        decoder_points=4,
        ffn_dim=512,
        input_size=(256, 256),
        correlation_stages=(1,),
        correlation_radius=5,
        correlation_patch=4,
        correlation_pixel_radius=10,
        initialisation="tracking",
    )


def tiny_config() -> ModelConfig:
    """A minute model for unit tests: `small` scaled down (ResNet-18 stages, 32 channels, 2
    decoder layers, 2 sampling points, a 64x96 input, no correlation update); random weights,
    runs in milliseconds."""
    return small_config().replace(name="tiny", backbone="resnet18", hidden_dim=32, ffn_dim=64,
                            decoder_layers=2, encoder_points=2, decoder_points=2,
                            input_size=(64, 96), correlation_stages=(), correlation_radius=3,
                            correlation_patch=0, correlation_pixel_radius=3,
                            initialisation="detr")

