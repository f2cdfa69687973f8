"""Synthetic 2.5D scenes with exact point tracks, rendered in PyTorch on CPU or GPU.

A scene is a background photo/texture under a smooth camera homography and 3-10 foreground
layers (photo cut-outs with their real alpha, or random smooth shapes filled with a texture)
moving smoothly (translation, rotation, scale, optional elastic deformation) in a fixed depth
order; they enter and leave the frame and pass behind each other. Camera effects (motion blur,
brightness/contrast drift, noise, compression artefacts) are optional. Every point's track
follows its layer's transform exactly, and its visibility comes from the depth order (alpha of
the nearer layers) and the frame bounds.

    config = SceneConfig(size=(256, 256), num_frames=24, num_points=256, textures="textures/")
    sample = SceneGenerator(config).generate(seed=0)          # a TrackingSample
    samples = SceneGenerator(config, device="cuda").generate_batch(range(64))
    write_heldout_set("heldout.pkl", 50, config, seed=1234, textures="textures/")

Everything is a deterministic function of the seed (and the device: CPU and GPU give the same
scene up to floating-point rounding, and different sensor noise).

Stages (one module each in this package): `layout` draws the scene, `render` draws the
frames, `points` computes the ground truth, `effects` degrades the frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from taptr.data.sample import TrackingSample
from taptr.data.seeding import derive_seed
from taptr.data.scenes.config import SceneConfig, SceneRanges
from taptr.data.scenes.effects import CameraEffects, apply_effects, sample_effects
from taptr.data.scenes.layout import SceneLayout, sample_layout, stack_layouts
from taptr.data.scenes.points import PointTracks, sample_tracks
from taptr.data.scenes.render import RenderedScenes, render_layout
from taptr.data.tapvid import write_tapvid_pickle
from taptr.data.scenes.textures import TextureLibrary

__all__ = [
    "SceneConfig",
    "SceneGenerator",
    "SceneBatch",
    "write_heldout_set",
]


@dataclass
class _SceneSeeds:
    """Independent random streams of one scene, so that e.g. changing the number of points
    does not change the scene itself."""

    layout: torch.Generator
    points: torch.Generator
    effects: torch.Generator
    noise: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, device: torch.device) -> "_SceneSeeds":
        def cpu(stream: int) -> torch.Generator:
            return torch.Generator().manual_seed(derive_seed(seed, stream))

        noise = torch.Generator(device=device).manual_seed(derive_seed(seed, 3))
        return cls(layout=cpu(0), points=cpu(1), effects=cpu(2), noise=noise)


@dataclass
class SceneBatch:
    """Everything the engine made for a batch of scenes (for tests and inspection).

    Attributes:
        samples: the `TrackingSample`s.
        layout: the scenes' layers and transforms.
        rendered: the frames before camera effects, with the owner map.
        points: per-scene ground truth with the layer of each point and its coverage.
        effects: per-scene camera-effect parameters.
    """

    samples: list[TrackingSample]
    layout: SceneLayout
    rendered: RenderedScenes
    points: list[PointTracks]
    effects: list[CameraEffects]


def _to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """`[B, 3, T, H, W]` float in [0, 1] -> uint8 `[B, T, H, W, 3]` (rounded)."""
    scaled = torch.addcmul(
        torch.tensor(0.5, device=video.device), video, torch.tensor(255.0, device=video.device)
    )
    return scaled.clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()


class SceneGenerator:
    """Makes synthetic clips from seeds, on one device.

    Args:
        config: what to generate.
        textures: a `TextureLibrary`; by default loaded from `config.textures` (split
            `config.texture_split`), or procedural textures when that is None.
        device: where to render ("cpu", "cuda", ...).
    """

    def __init__(
        self,
        config: SceneConfig,
        textures: TextureLibrary | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.ranges = SceneRanges.from_config(config)
        self.device = torch.device(device)
        if textures is None:
            textures = (
                TextureLibrary.load(config.textures, split=config.texture_split)
                if config.textures
                else TextureLibrary.empty()
            )
        self.textures = textures.to(self.device)

    def generate(self, seed: int) -> TrackingSample:
        """One clip from `seed`."""
        return self.generate_batch([seed])[0]

    def generate_batch(self, seeds: Sequence[int]) -> list[TrackingSample]:
        """One clip per seed, rendered together (one batched pass per layer)."""
        return self._generate(seeds, keep_clean_frames=False).samples

    def generate_details(self, seeds: Sequence[int]) -> SceneBatch:
        """Like `generate_batch`, also returning the layout, clean frames and point layers."""
        return self._generate(seeds, keep_clean_frames=True)

    def _generate(self, seeds: Sequence[int], keep_clean_frames: bool) -> SceneBatch:
        config = self.config
        streams = [_SceneSeeds.from_seed(int(seed), self.device) for seed in seeds]
        layouts = [
            sample_layout(config, self.ranges, self.textures, stream.layout, self.device)
            for stream in streams
        ]
        layout = stack_layouts(layouts)
        if config.effects:
            effects = [sample_effects(self.ranges, config.num_frames, s.effects) for s in streams]
        else:
            effects = [CameraEffects.none(config.num_frames) for _ in streams]
        needs_flow = any(e.blur_exposure > 0 for e in effects)
        rendered = render_layout(layout, with_flow=needs_flow)
        points = [
            sample_tracks(layout, rendered.owner, scene, config, stream.points)
            for scene, stream in enumerate(streams)
        ]
        video = rendered.video
        if config.effects:
            video = video.clone() if keep_clean_frames else video
            video = apply_effects(video, rendered.flow, effects, [s.noise for s in streams])
        frames = _to_uint8_frames(video)
        # own storage per clip, so keeping one clip does not keep the whole batch alive
        clips = [frames[0]] if len(seeds) == 1 else [clip.clone() for clip in frames]
        samples = [
            TrackingSample(
                video=clips[scene],
                tracks=scene_points.tracks.float(),
                visible=scene_points.visible,
                query_frames=scene_points.query_frames.long(),
                name=f"synthetic-{int(seed)}",
            )
            for scene, (seed, scene_points) in enumerate(zip(seeds, points))
        ]
        return SceneBatch(samples, layout, rendered, points, effects)


def _heldout_textures(config: SceneConfig, textures) -> TextureLibrary:
    """The library a held-out set uses: the held-out split unless a library is given."""
    if isinstance(textures, TextureLibrary):
        return textures
    folder = textures if textures is not None else config.textures
    if folder is None:
        return TextureLibrary.empty()
    return TextureLibrary.load(folder, split="heldout")


def write_heldout_set(
    path: str | os.PathLike,
    num_clips: int,
    config: SceneConfig,
    seed: int,
    textures: TextureLibrary | str | os.PathLike | None = None,
) -> Path:
    """Write `num_clips` synthetic clips as a TAP-Vid pickle (DAVIS layout), return the path.

    The pickle maps "synthetic_<seed>_<i>" to {"video": uint8 [T, H, W, 3], "points": float32
    [N, T, 2] normalised u = (x + 0.5) / W, "occluded": bool [N, T]}.
    textures: a folder (its held-out split is used: file names hashed away from training),
    a `TextureLibrary` (used as is), or None (the held-out split of `config.textures`, or
    procedural textures).
    """
    library = _heldout_textures(config, textures)
    generator = SceneGenerator(replace(config, textures=None), library)
    entries = {}
    for clip in range(num_clips):
        sample = generator.generate(derive_seed(seed, clip))
        entries[f"synthetic_{seed}_{clip:04d}"] = sample.to_tapvid()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tapvid_pickle(path, entries)
    return path
