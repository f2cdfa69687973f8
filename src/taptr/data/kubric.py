"""Kubric MOVi-F training clips in the CoTracker layout, with the official TAPTRv2 pipeline.

On-disk layout (docs/data.md, section 3):

    <root>/<seq>/frames/000.png 001.png ...   RGB frames (512 x 512), sorted by name
    <root>/<seq>/<seq>.npy                    np.save of a dict:
        "coords":     float [N_tracks, T, 2] pixel (x, y)
        "visibility": bool  [N_tracks, T]    despite its name, True = OCCLUDED

`KubricClips(root, seed, size, num_frames, num_points)` maps a clip index to a
`TrackingSample`: sequence perm(index) (a seeded permutation per epoch), with the official
query sampling (points visible at frame 0 or T // 2; clips with too few candidates are
replaced by the next sequence) and augmentations (photometric: eraser, replace, colour jitter,
blur; temporal camera panning and crop; flips; trajectory restarts), then resized to `size`.
Everything is a function of (seed, index). Frames are returned RGB (the official code trains on
BGR, set `bgr=True` to reproduce that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from taptr import coords
from taptr.data.kubric_augment import (
    Clip,
    camera_panning,
    first_visible_frames,
    flips,
    photometric,
    resize_clip,
    restart_trajectories,
)
from taptr.data.sample import TrackingSample
from taptr.data.seeding import derive_seed
from taptr.errors import TaptrError
from taptr.text import count


@dataclass
class KubricAugmentations:
    """Which official augmentations run (all on by default)."""

    photometric: bool = True
    panning: bool = True
    flips: bool = True
    restarts: bool = True
    restart_fraction: float = 0.25

    @classmethod
    def none(cls) -> "KubricAugmentations":
        return cls(photometric=False, panning=False, flips=False, restarts=False)


def find_sequences(root: str | os.PathLike) -> list[Path]:
    """Sequence folders under `root` (those with a `frames/` folder), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise TaptrError(f"Kubric folder not found: {root}")
    sequences = sorted(path for path in root.iterdir() if (path / "frames").is_dir())
    if not sequences:
        raise TaptrError(f"no Kubric sequences (<seq>/frames/*.png) under {root}")
    return sequences


def _annotation_file(sequence: Path) -> Path:
    named = sequence / f"{sequence.name}.npy"
    if named.is_file():
        return named
    candidates = sorted(sequence.glob("*.npy"))
    if len(candidates) != 1:
        raise TaptrError(f"{sequence}: expected {named.name} (or exactly one .npy file)")
    return candidates[0]


def read_sequence(sequence: str | os.PathLike, bgr: bool = False) -> Clip:
    """Read one sequence: frames uint8 `[T, H, W, 3]` (RGB unless `bgr`), tracks float32
    `[T, N, 2]`, visible `[T, N]` (not occluded and inside the frame)."""
    sequence = Path(sequence)
    frame_files = sorted(
        path for path in (sequence / "frames").iterdir() if path.suffix.lower() in (".png", ".jpg")
    )
    if not frame_files:
        raise TaptrError(f"{sequence}: no frames")
    frames = []
    for path in frame_files:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise TaptrError(f"cannot read frame {path}")
        frames.append(frame if bgr else cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    frames = np.stack(frames)
    annotation = np.load(_annotation_file(sequence), allow_pickle=True).item()
    positions = np.asarray(annotation["coords"], dtype=np.float32)  # [N, T, 2]
    occluded = np.asarray(annotation["visibility"], dtype=bool)  # Kubric's name for occluded
    if positions.shape[1] != len(frames) or occluded.shape != positions.shape[:2]:
        raise TaptrError(
            f"{sequence}: {count(len(frames), 'frame')} but coords {positions.shape}, "
            f"visibility {occluded.shape}"
        )
    tracks = positions.transpose(1, 0, 2).copy()
    height, width = frames.shape[1:3]
    visible = ~occluded.T & coords.within_pixel_centres(tracks, (width, height))
    return Clip(frames, tracks, visible)


def sample_queries(
    visible: np.ndarray, num_points: int, rng: np.random.Generator
) -> np.ndarray | None:
    """The official query sampling: point indices `[num_points]`, or None to reject the clip.

    Candidates are the points visible at frame 0 followed by those visible at frame T // 2
    (a point can appear twice); `num_points` of them are drawn without replacement.
    """
    middle = visible.shape[0] // 2
    candidates = np.concatenate([np.flatnonzero(visible[0]), np.flatnonzero(visible[middle])])
    if len(candidates) < num_points:
        return None
    return candidates[rng.choice(len(candidates), size=num_points, replace=False)]


def _temporal_window(clip: Clip, num_frames: int, rng: np.random.Generator) -> Clip:
    total = clip.frames.shape[0]
    if num_frames > total:
        raise TaptrError(f"clips of {count(num_frames, 'frame')} requested but sequences have {total}")
    start = int(rng.integers(0, total - num_frames + 1))
    window = slice(start, start + num_frames)
    return Clip(clip.frames[window], clip.tracks[window], clip.visible[window])


def _default_crop(frame_size: tuple[int, int], output_size: tuple[int, int]) -> tuple[int, int]:
    """The largest crop with the output's aspect ratio that fits the frame."""
    height, width = frame_size
    out_height, out_width = output_size
    scale = min(height / out_height, width / out_width)
    return max(1, int(out_height * scale)), max(1, int(out_width * scale))


def _refill_invisible(clip: Clip, rng: np.random.Generator) -> Clip | None:
    """Replace points never visible (erased or cropped away everywhere) by copies of visible
    ones, keeping the count; None if no point is visible anywhere."""
    seen = clip.visible.any(axis=0)
    if not seen.any():
        return None
    if seen.all():
        return clip
    kept = np.flatnonzero(seen)
    refill = rng.choice(kept, size=int((~seen).sum()), replace=True)
    index = np.concatenate([kept, refill])
    return Clip(clip.frames, clip.tracks[:, index], clip.visible[:, index])


class KubricClips:
    """Kubric MOVi-F clips with the official TAPTRv2 sampling and augmentations.

    Args:
        root: folder of sequences (`<root>/<seq>/frames/*.png`, `<root>/<seq>/<seq>.npy`).
        seed: data seed; clip `index` depends only on (seed, index).
        size: (H, W) of the returned clips.
        num_frames: T (a random window when sequences are longer; 24 officially = all).
        num_points: N (800 officially).
        crop_size: (H, W) of the panning crop; default: the largest crop of the frame with
            the aspect ratio of `size` (512 x 512 officially).
        augmentations: which augmentations run (`KubricAugmentations.none()` for raw clips).
        bgr: return BGR frames like the official training code.
        max_attempts: sequences tried per index before giving up.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        seed: int = 0,
        size: tuple[int, int] = (512, 512),
        num_frames: int = 24,
        num_points: int = 800,
        crop_size: tuple[int, int] | None = None,
        augmentations: KubricAugmentations | None = None,
        bgr: bool = False,
        max_attempts: int = 20,
    ) -> None:
        self.sequences = find_sequences(root)
        self.seed = int(seed)
        self.size = (int(size[0]), int(size[1]))
        self.num_frames = int(num_frames)
        self.num_points = int(num_points)
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.augmentations = augmentations if augmentations is not None else KubricAugmentations()
        self.bgr = bool(bgr)
        self.max_attempts = int(max_attempts)

    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_index(self, index: int) -> int:
        """Sequence of clip `index`: position index % n of a permutation seeded per epoch."""
        count = len(self.sequences)
        epoch, position = divmod(int(index), count)
        order = np.random.default_rng(derive_seed(self.seed, epoch, 0)).permutation(count)
        return int(order[position])

    def __call__(self, index: int) -> TrackingSample:
        for attempt in range(self.max_attempts):
            sequence = self.sequence_index(int(index) + attempt * 7919)
            rng = np.random.default_rng(derive_seed(self.seed, int(index), attempt, 1))
            sample = self.make_sample(sequence, rng)
            if sample is not None:
                return sample
        raise TaptrError(
            f"no usable Kubric clip for index {index} after "
            f"{count(self.max_attempts, 'sequence')} (need {count(self.num_points, 'point')} "
            f"visible at frame 0 or T/2)"
        )

    __getitem__ = __call__

    def make_sample(self, sequence: int, rng: np.random.Generator) -> TrackingSample | None:
        """One augmented clip of sequence `sequence`, or None if the clip is rejected."""
        path = self.sequences[sequence]
        clip = _temporal_window(read_sequence(path, self.bgr), self.num_frames, rng)
        chosen = sample_queries(clip.visible, self.num_points, rng)
        if chosen is None:
            return None
        clip = Clip(clip.frames, clip.tracks[:, chosen], clip.visible[:, chosen])
        clip = self._augment(clip, rng)
        clip = _refill_invisible(clip, rng)
        if clip is None:
            return None
        visible, starts = clip.visible, first_visible_frames(clip.visible)
        if self.augmentations.restarts:
            visible, starts = restart_trajectories(
                visible, rng, self.augmentations.restart_fraction
            )
        tracked_frames = visible.sum(axis=0)
        if (tracked_frames <= 1).all():
            return None  # the official code redraws clips whose points are all single-frame
        order = np.argsort(starts, kind="stable")
        return TrackingSample(
            video=torch.from_numpy(np.ascontiguousarray(clip.frames)),
            tracks=torch.from_numpy(np.ascontiguousarray(clip.tracks[:, order], dtype=np.float32)),
            visible=torch.from_numpy(np.ascontiguousarray(visible[:, order])),
            query_frames=torch.from_numpy(starts[order].astype(np.int64)),
            name=f"kubric-{path.name}",
        )

    def _augment(self, clip: Clip, rng: np.random.Generator) -> Clip:
        """Photometric, panning + crop, flips, then resize to `size`."""
        chosen = self.augmentations
        if chosen.photometric:
            clip = photometric(clip, rng)
        crop = self.crop_size or _default_crop(clip.size, self.size)
        if chosen.panning:
            clip = camera_panning(clip, rng, crop)
        elif crop != clip.size:
            clip = _centre_crop(clip, crop)
        if chosen.flips:
            clip = flips(clip, rng)
        return resize_clip(clip, self.size)


def _centre_crop(clip: Clip, crop: tuple[int, int]) -> Clip:
    """A centred `crop` (H, W) of every frame; points outside become not visible."""
    height, width = clip.size
    top, left = (height - crop[0]) // 2, (width - crop[1]) // 2
    frames = clip.frames[:, top : top + crop[0], left : left + crop[1]]
    tracks = clip.tracks - np.array([left, top], dtype=np.float32)
    visible = clip.visible & coords.within_pixel_centres(tracks, (crop[1], crop[0]))
    return replace(clip, frames=np.ascontiguousarray(frames), tracks=tracks, visible=visible)
