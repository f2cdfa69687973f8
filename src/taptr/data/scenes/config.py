"""Configuration of the synthetic scene engine: `SceneConfig` and the ranges it implies.

`SceneConfig` is what users set (size, length, points, difficulty, effects, textures).
`SceneRanges.from_config` turns the single `difficulty` knob into every sampling range of the
engine (speeds, rotations, scale changes, deformation, camera motion, effect strengths), so the
meaning of "difficulty" lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from taptr.errors import TaptrError

DIFFICULTY_NAMES = {"easy": 0.2, "medium": 0.5, "hard": 0.85}


@dataclass
class SceneConfig:
    """What the synthetic scene engine generates.

    Attributes:
        size: (H, W) of the frames.
        num_frames: T, frames per clip.
        num_points: N, tracks per clip.
        difficulty: 0 (slow, rigid, clean) to 1 (fast, deforming, heavy effects); or one of
            "easy", "medium", "hard".
        effects: apply camera effects (motion blur, brightness/contrast drift, noise,
            compression artefacts); off gives exactly rendered frames.
        textures: a folder of images (see `taptr.data.scenes.textures`), or None for procedural
            textures only.
        texture_split: which textures of the folder to use: "train", "heldout" or "all".
        min_foreground, max_foreground: number of foreground layers per clip (inclusive).
        background_fraction: share of the points sampled on the background; the rest are on
            the foreground layers, in proportion to their visible area.
        query_at_first_visible: report each point's first visible frame as its query frame
            (the official convention); otherwise the frame it was sampled at.
        restart_fraction: share of the points whose query frame is then moved to a uniformly
            random frame where they are visible (like the official trajectory restarts, but
            the visibility flags stay true to the scene).
        photo_probability: chance that a texture is a photo crop when photos are available.
        cutout_probability: chance that a foreground layer is a photo cut-out when available.
    """

    size: tuple[int, int] = (256, 256)
    num_frames: int = 24
    num_points: int = 256
    difficulty: float | str = 0.5
    effects: bool = True
    textures: str | None = None
    texture_split: str = "train"
    min_foreground: int = 3
    max_foreground: int = 10
    background_fraction: float = 0.25
    query_at_first_visible: bool = True
    restart_fraction: float = 0.25
    photo_probability: float = 0.8
    cutout_probability: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.difficulty, str):
            if self.difficulty not in DIFFICULTY_NAMES:
                raise TaptrError(
                    f"difficulty must be a number in [0, 1] or one of {sorted(DIFFICULTY_NAMES)}"
                )
            self.difficulty = DIFFICULTY_NAMES[self.difficulty]
        self.difficulty = float(self.difficulty)
        self.size = (int(self.size[0]), int(self.size[1]))
        problems = []
        if not 0.0 <= self.difficulty <= 1.0:
            problems.append(f"difficulty {self.difficulty} is outside [0, 1]")
        if min(self.size) < 16:
            problems.append(f"size {self.size} is too small (at least 16 x 16)")
        if self.num_frames < 2:
            problems.append("num_frames must be at least 2")
        if self.num_points < 1:
            problems.append("num_points must be at least 1")
        if not 0 <= self.min_foreground <= self.max_foreground:
            problems.append("need 0 <= min_foreground <= max_foreground")
        if not 0.0 <= self.background_fraction <= 1.0:
            problems.append("background_fraction must be in [0, 1]")
        if not 0.0 <= self.restart_fraction <= 1.0:
            problems.append("restart_fraction must be in [0, 1]")
        if problems:
            raise TaptrError("invalid SceneConfig: " + "; ".join(problems))

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    @property
    def foreground_texture_size(self) -> int:
        """Side S of the square foreground textures: half the shorter frame side, >= 64."""
        return max(64, round(min(self.size) / 2 / 16) * 16)

    @property
    def background_texture_size(self) -> tuple[int, int]:
        """(H, W) of the background texture: 1.5 x the frame, room for camera motion."""
        return round(1.5 * self.size[0]), round(1.5 * self.size[1])


@dataclass
class SceneRanges:
    """Every sampling range of the engine, derived from a `SceneConfig`.

    Lengths are frame pixels, angles radians, times frames; `*_speed` is per frame,
    `*_acceleration` per frame squared.
    """

    object_size: tuple[float, float]
    object_speed: float
    object_acceleration: float
    object_wobble: float
    object_spin: float
    object_spin_acceleration: float
    object_spin_wobble: float
    object_log_scale_speed: float
    object_log_scale_limit: float
    deform_probability: float
    deform_displacement: float
    camera_speed: float
    camera_acceleration: float
    camera_wobble: float
    camera_spin: float
    camera_log_zoom_speed: float
    camera_tilt: float
    blur_probability: float
    blur_exposure: float
    drift_probability: float
    drift_strength: float
    noise_probability: float
    noise_sigma: float
    jpeg_probability: float
    jpeg_quality: tuple[float, float]

    @classmethod
    def from_config(cls, config: SceneConfig) -> "SceneRanges":
        d = float(config.difficulty)
        pixels = min(config.size) / 256.0  # ranges are tuned for 256 px frames
        effects = 1.0 if config.effects else 0.0
        return cls(
            object_size=(0.15 * min(config.size), 0.45 * min(config.size)),
            object_speed=(1.5 + 10.0 * d) * pixels,
            object_acceleration=(0.05 + 0.4 * d) * pixels,
            object_wobble=(1.0 + 8.0 * d) * pixels,
            object_spin=0.005 + 0.04 * d,
            object_spin_acceleration=0.002 * d,
            object_spin_wobble=0.05 + 0.3 * d,
            object_log_scale_speed=0.003 + 0.015 * d,
            object_log_scale_limit=0.2 + 0.5 * d,
            deform_probability=0.2 + 0.4 * d,
            deform_displacement=0.01 + 0.05 * d,
            camera_speed=(0.5 + 6.0 * d) * pixels,
            camera_acceleration=(0.02 + 0.2 * d) * pixels,
            camera_wobble=(1.0 + 6.0 * d) * pixels,
            camera_spin=0.002 + 0.01 * d,
            camera_log_zoom_speed=0.002 + 0.01 * d,
            camera_tilt=0.05 + 0.2 * d,
            blur_probability=effects * (0.2 + 0.4 * d),
            blur_exposure=0.5 + 0.5 * d,
            drift_probability=effects * 0.5,
            drift_strength=0.1 + 0.3 * d,
            noise_probability=effects * 0.5,
            noise_sigma=(1.0 + 6.0 * d) / 255.0,
            jpeg_probability=effects * (0.2 + 0.4 * d),
            jpeg_quality=(90.0 - 60.0 * d, 95.0),
        )
