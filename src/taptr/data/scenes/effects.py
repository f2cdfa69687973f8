"""Camera effects on rendered synthetic videos (ground truth is unaffected).

* motion blur: each pixel averages the frame along its own motion (the rendered flow), over a
  shutter centred on the frame time, so a blurred point stays centred on its track;
* brightness / contrast / colour drift: smooth per-frame gains and offsets;
* sensor noise: Gaussian, per pixel;
* compression artefacts: a JPEG-like codec (YCbCr, 4:2:0 chroma, 8x8 DCT quantised with the
  standard tables scaled by a quality factor).

Per-scene parameters are drawn by `sample_effects` from the scene's CPU generator; noise uses a
generator on the video's device seeded from the scene seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from taptr.data.scenes.config import SceneRanges

BLUR_TAPS = 5

# ITU-T T.81 Annex K example quantisation tables (luminance, chrominance).
_LUMA_TABLE = [
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
]
_CHROMA_TABLE = [
    [17, 18, 24, 47, 99, 99, 99, 99],
    [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99],
    [47, 66, 99, 99, 99, 99, 99, 99],
] + [[99] * 8] * 4


@dataclass
class CameraEffects:
    """Effect parameters of one scene (all "off" values leave the video unchanged).

    Attributes:
        blur_exposure: shutter length in frames (0 = no motion blur).
        gain: `[T, 3]` per-frame, per-channel multiplicative gain.
        offset: `[T, 3]` additive offset.
        contrast: `[T]` contrast factor around mid-grey.
        noise_sigma: std of Gaussian noise (intensity units, 0 = none).
        jpeg_quality: 1..100, or 0 for no compression.
    """

    blur_exposure: float
    gain: torch.Tensor
    offset: torch.Tensor
    contrast: torch.Tensor
    noise_sigma: float
    jpeg_quality: float

    @property
    def has_drift(self) -> bool:
        return bool(
            (self.gain != 1).any() or (self.offset != 0).any() or (self.contrast != 1).any()
        )

    @classmethod
    def none(cls, num_frames: int) -> "CameraEffects":
        return cls(
            0.0,
            torch.ones(num_frames, 3),
            torch.zeros(num_frames, 3),
            torch.ones(num_frames),
            0.0,
            0.0,
        )


def _smooth_series(
    generator: torch.Generator, num_frames: int, channels: int, strength: float
) -> torch.Tensor:
    """`[T, channels]` smooth random series in about [-strength, strength]."""
    time = torch.linspace(0, 1, num_frames)[:, None]
    start = (2 * torch.rand(channels, generator=generator) - 1) * strength
    slope = (2 * torch.rand(channels, generator=generator) - 1) * strength
    phase = torch.rand(channels, generator=generator) * 2 * math.pi
    wave = 0.5 * strength * torch.rand(channels, generator=generator)
    return start + slope * (time - 0.5) + wave * torch.sin(2 * math.pi * time + phase)


def sample_effects(
    ranges: SceneRanges, num_frames: int, generator: torch.Generator
) -> CameraEffects:
    """Draw one scene's camera effects (each effect on with its probability in `ranges`)."""
    effects = CameraEffects.none(num_frames)
    draws = torch.rand(4, generator=generator).tolist()
    if draws[0] < ranges.blur_probability:
        effects.blur_exposure = float(torch.rand((), generator=generator)) * ranges.blur_exposure
    if draws[1] < ranges.drift_probability:
        strength = ranges.drift_strength
        common = _smooth_series(generator, num_frames, 1, strength)
        tint = _smooth_series(generator, num_frames, 3, strength / 4)
        effects.gain = torch.exp(common + tint)
        effects.offset = (
            _smooth_series(generator, num_frames, 1, strength / 3).expand(-1, 3).clone()
        )
        effects.contrast = torch.exp(_smooth_series(generator, num_frames, 1, strength)[:, 0])
    if draws[2] < ranges.noise_probability:
        effects.noise_sigma = float(torch.rand((), generator=generator)) * ranges.noise_sigma
    if draws[3] < ranges.jpeg_probability:
        low, high = ranges.jpeg_quality
        effects.jpeg_quality = low + (high - low) * float(torch.rand((), generator=generator))
    return effects


def motion_blur(video: torch.Tensor, flow: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """Average each pixel along its motion.

    video `[B, 3, T, H, W]`, flow `[B, 2, T, H, W]` (pixels per frame), exposure `[B]`
    (frames). Taps are spread uniformly over [-exposure/2, exposure/2] frames.
    """
    batch, channels, frames, height, width = video.shape
    flat_video = video.transpose(1, 2).reshape(batch * frames, channels, height, width)
    flat_flow = flow.transpose(1, 2).reshape(batch * frames, 2, height, width).permute(0, 2, 3, 1)
    xs = (2 * torch.arange(width, device=video.device) + 1) / width - 1
    ys = (2 * torch.arange(height, device=video.device) + 1) / height - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2]
    to_normalised = flat_flow.new_tensor([2.0 / width, 2.0 / height])
    per_frame_exposure = exposure.repeat_interleave(frames)[:, None, None, None]
    blurred = torch.zeros_like(flat_video)
    for tap in range(BLUR_TAPS):
        fraction = tap / (BLUR_TAPS - 1) - 0.5
        grid = base + flat_flow * (fraction * to_normalised) * per_frame_exposure
        blurred += F.grid_sample(
            flat_video, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
    blurred /= BLUR_TAPS
    return blurred.reshape(batch, frames, channels, height, width).transpose(1, 2)


def photometric_drift(video, gain, offset, contrast) -> torch.Tensor:
    """((video - 0.5) * contrast + 0.5) * gain + offset, as one multiply-add.

    video `[B, 3, T, H, W]`; gain, offset `[B, T, 3]`; contrast `[B, T]`.
    """
    gain = gain.permute(0, 2, 1)[..., None, None]
    offset = offset.permute(0, 2, 1)[..., None, None]
    contrast = contrast[:, None, :, None, None]
    scale = contrast * gain
    shift = (0.5 - 0.5 * contrast) * gain + offset
    return torch.addcmul(shift, video, scale)


def _dct_matrix(device) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix `[8, 8]` (rows are frequencies)."""
    index = torch.arange(8, dtype=torch.float32, device=device)
    matrix = torch.cos(math.pi * (2 * index[None, :] + 1) * index[:, None] / 16)
    matrix[0] *= 1 / math.sqrt(2)
    return matrix * 0.5


def _quantisation_tables(quality: torch.Tensor) -> torch.Tensor:
    """`[N, 3, 8, 8]` quantisation steps (Y, Cb, Cr) for qualities `[N]` (libjpeg scaling)."""
    quality = quality.clamp(1, 100)
    scale = torch.where(quality < 50, 5000 / quality, 200 - 2 * quality)[:, None, None]
    tables = []
    for base in (_LUMA_TABLE, _CHROMA_TABLE, _CHROMA_TABLE):
        table = quality.new_tensor(base)
        tables.append(torch.floor((table * scale + 50) / 100).clamp(1, 255))
    return torch.stack(tables, dim=1)


def jpeg_artifacts(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG-like compression round trip of `images` `[N, 3, H, W]` in [0, 1].

    quality: `[N]` in 1..100. Colour is converted to YCbCr (BT.601, full range), chroma is
    averaged over 2x2 blocks, every 8x8 block of every channel is DCT-transformed, its
    coefficients rounded to multiples of the quantisation steps, and everything inverted.
    """
    count, _, height, width = images.shape
    rgb = images * 255
    red, green, blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    chroma_blue = -0.168736 * red - 0.331264 * green + 0.5 * blue
    chroma_red = 0.5 * red - 0.418688 * green - 0.081312 * blue
    chroma = torch.stack([chroma_blue, chroma_red], dim=1)
    pad_bottom, pad_right = (-height) % 16, (-width) % 16
    chroma = F.pad(chroma, (0, pad_right, 0, pad_bottom), mode="replicate")
    chroma = F.interpolate(F.avg_pool2d(chroma, 2), scale_factor=2, mode="nearest")
    luma = F.pad(luma[:, None], (0, pad_right, 0, pad_bottom), mode="replicate")
    planes = torch.cat([luma - 128, chroma], dim=1)  # [N, 3, H', W']
    padded_height, padded_width = planes.shape[-2:]
    rows, columns = padded_height // 8, padded_width // 8
    blocks = planes.reshape(count, 3, rows, 8, columns, 8).permute(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(count, 3, rows * columns, 64)
    dct = _dct_matrix(images.device)
    transform = torch.kron(dct, dct)  # [64, 64]: vec(D X D^T) = (D kron D) vec(X)
    steps = _quantisation_tables(quality).reshape(count, 3, 1, 64)
    coefficients = blocks @ transform.T
    coefficients = torch.round(coefficients / steps) * steps
    blocks = (coefficients @ transform).reshape(count, 3, rows, columns, 8, 8)
    planes = blocks.permute(0, 1, 2, 4, 3, 5).reshape(count, 3, padded_height, padded_width)
    planes = planes[..., :height, :width]
    luma, chroma_blue, chroma_red = planes[:, 0] + 128, planes[:, 1], planes[:, 2]
    red = luma + 1.402 * chroma_red
    green = luma - 0.344136 * chroma_blue - 0.714136 * chroma_red
    blue = luma + 1.772 * chroma_blue
    return (torch.stack([red, green, blue], dim=1) / 255).clamp(0, 1)


def apply_effects(
    video: torch.Tensor,
    flow: torch.Tensor | None,
    effects: list[CameraEffects],
    noise_generators: list[torch.Generator],
) -> torch.Tensor:
    """Apply each scene's effects to `video` `[B, 3, T, H, W]` (float in [0, 1]).

    flow: `[B, 2, T, H, W]` (needed when some scene has motion blur); noise_generators: one
    generator on the video's device per scene.
    """
    device = video.device
    batch, _, frames, height, width = video.shape
    exposure = torch.tensor([e.blur_exposure for e in effects], device=device)
    if flow is not None and bool((exposure > 0).any()):
        video = motion_blur(video, flow, exposure)
    if any(e.has_drift for e in effects):
        video = photometric_drift(
            video,
            torch.stack([e.gain for e in effects]).to(device),
            torch.stack([e.offset for e in effects]).to(device),
            torch.stack([e.contrast for e in effects]).to(device),
        )
    noisy = [scene for scene, e in enumerate(effects) if e.noise_sigma > 0]
    for scene in noisy:
        noise = torch.randn(video.shape[1:], generator=noise_generators[scene], device=device)
        video[scene] += effects[scene].noise_sigma * noise
    video = video.clamp_(0, 1)
    compressed = [scene for scene, e in enumerate(effects) if e.jpeg_quality > 0]
    if compressed:
        index = torch.tensor(compressed, device=device)
        quality = torch.tensor([effects[s].jpeg_quality for s in compressed], device=device)
        selected = video[index].transpose(1, 2).reshape(-1, 3, height, width)
        per_frame_quality = quality.repeat_interleave(frames)
        restored = jpeg_artifacts(selected, per_frame_quality)
        video[index] = restored.reshape(len(compressed), frames, 3, height, width).transpose(1, 2)
    return video
