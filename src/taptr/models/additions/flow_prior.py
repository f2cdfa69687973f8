"""Dense optical-flow motion prior (ours, not in the paper).

TAPTRv2 starts each frame that no window has decoded yet from a copy of the last decoded
position (the official window loop's propagation). This hook starts it where dense optical
flow takes the point instead: before a window is decoded, each frame f of it that no earlier
window decoded gets, for every point tracked at f - 1 (query frame before f), the position at
f - 1 moved by the flow from f - 1 to f, sampled bilinearly at that position; every decoder
layer's position and APU position are set, so the decoder refines from there.

The flow is OpenCV's DIS (Kroeger et al., ECCV 2016; `cv2.DISOpticalFlow`, the preset of the
option `flow_preset`, "fast" by default) on the network's input frames turned gray, at the
network's input resolution, computed once per frame pair; with the option `flow_resolution`
N > 0, on the video's own frames in gray scaled to at most N pixels on the longer side (the
stream's source frames, `TrackStream.push(frames, sources)`), which the flow needs for
sub-pixel precision on real video (docs/flow_prior.md). With the option `flow_consistency`
the backward flow is computed too, and the forward-backward error |p + F(p) + B(p + F(p)) - p|
of each step (pixels of the frames the flow runs on) is kept per frame as a reliability signal (`consistency`).

A point the flow takes out of the frame (more than `OUTSIDE_MARGIN_PX` beyond an edge) is
occluded there: after each window its visibility logits are set to `OCCLUDED_LOGIT` in those
frames (the network's positions cannot leave the frame; without this a point that left stayed
pinned to the border, visible). The flow carries such a point on from where it has it, off the
frame (the flow of the nearest border pixel), until it comes back in. And a point the model
calls occluded in a frame can follow the flow there (option `flow_follows_occluded`, off by
default): its position becomes the one the flow gave it before the window, not the decoder's
guess. It helps where points hide behind themselves or leave with the camera, and hurts where
an occluder passes over them: the flow there is the occluder's (docs/flow_prior.md).

With the option `flow_anchor` the flow and the decoder compete by appearance where the flow is
reliable: after each window, a point whose flow step into a frame passed the forward-backward
check (`ANCHOR_FB_PX`) takes the flow's position there when its gray patch matches at least as
well as the decoder's (normalised cross-correlation): near each other (`ANCHOR_RADIUS_PX`) the
match is with the point's query-frame patch, which catches the flow's slow drift; far apart,
with the point's patch in the frame before, which tells which of the two jumped off the
surface (in a window's first frame, whose frame before the window no longer holds, the flow's
wins when far). A point the model calls occluded takes the flow's position when the flow's patch still
matches its query-frame patch (`ANCHOR_HIDDEN_NCC`). Elsewhere the decoder's position stands,
and the flow continues from it.

Why: the decoder corrects a position near the truth far better than it finds one that moved
far; classical flow is the best short-term motion estimate a CPU has (docs/flow_prior.md has
the measurements). Turned on and off by the tracking option `flow_prior`. The hook needs no
parameters and no training, and runs outside the network's graphs (ONNX export included): the gray frames are the hook's per-frame features,
the flow is computed by the stream's session in NumPy/OpenCV.
"""

from __future__ import annotations

import numpy as np
import torch

from taptr import coords
from taptr.flow import create_dis, sample_flow
from taptr.models.taptrv2.common import inverse_sigmoid
from taptr.models.taptrv2.hooks import HookSession, TrackingHook
from taptr.models.taptrv2.windows import SOURCE, FrameState
from taptr.preprocess import IMAGENET_MEAN, IMAGENET_STD

# A point the flow takes more than this many pixels (of the frames the flow runs on) beyond the
# frame's edge has left the frame: occluded there (a point inside, however near the border, keeps the model's visibility).
OUTSIDE_MARGIN_PX = 1.0
# Visibility logit of a point out of the frame (sigmoid: 4.5e-5).
OCCLUDED_LOGIT = -10.0
# Forward-backward error (pixels of a 256-pixel frame) under which a flow step is reliable
# (the `dis` baseline's check) for `flow_anchor`.
ANCHOR_FB_PX = 1.5
# `flow_anchor`, where the flow step is reliable: within this distance of the flow's position
# (pixels of a 256-pixel frame), the position whose patch correlates better with the point's
# query-frame patch stands (drift); beyond it, the one whose patch correlates better with the
# point's patch in the frame before (a jump: which of the two left the surface). The
# decoder's wins only when better by more than ANCHOR_MARGIN. A point the model calls occluded
# takes the flow's position when the flow's patch still correlates above ANCHOR_HIDDEN_NCC.
ANCHOR_RADIUS_PX = 4.0
ANCHOR_MARGIN = 0.0
ANCHOR_HIDDEN_NCC = 0.5
# Patch radius cap (a patch is at most (2r+1)^2 samples; OpenCV's remap takes under 32767).
MAX_PATCH_RADIUS = 24
# Source frames with a shorter side below this fall back to the network input's gray frames
# (DIS needs images of at least 12-16 pixels).
MIN_SOURCE_SIDE = 32
# ITU-R BT.601 luma weights (OpenCV's RGB -> gray).
_LUMA = (0.299, 0.587, 0.114)


def gray_from_normalised(frames: torch.Tensor) -> torch.Tensor:
    """Network input frames [Nb, 3, H, W] (ImageNet-normalised RGB) -> gray [Nb, 1, H, W]
    in 0..255 (float, rounded), as OpenCV's RGB2GRAY of the 8-bit frames."""
    mean = frames.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = frames.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = ((frames * std + mean).clamp(0, 1) * 255).round()
    luma = frames.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (rgb * luma).sum(1, keepdim=True).round()


def sample_patches(gray: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Bilinear patches [M, (2r+1)^2] (float32) of a gray frame [H, W] around points [M, 2]
    (x, y pixels); outside the frame the nearest border pixel."""
    import cv2

    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    ox, oy = np.meshgrid(offsets, offsets)
    map_x = np.ascontiguousarray(points[:, :1] + ox.reshape(1, -1), dtype=np.float32)
    map_y = np.ascontiguousarray(points[:, 1:2] + oy.reshape(1, -1), dtype=np.float32)
    return cv2.remap(gray.astype(np.float32, copy=False), map_x, map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def normalised_patches(patches: np.ndarray) -> np.ndarray:
    """Patches [M, P] with zero mean and unit norm per row (a flat patch stays zero)."""
    centred = patches - patches.mean(1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norm, 1e-6)


def _correlations(gray: np.ndarray, templates: np.ndarray, points_a: np.ndarray,
                  points_b: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlations [M] of normalised patches `templates` [M, P] with the
    patches of `gray` [H, W] at points_a and at points_b [M, 2] (x, y pixels)."""
    return tuple((normalised_patches(sample_patches(gray, points, radius)) * templates).sum(1)
                 for points in (points_a, points_b))


def _placed(position: torch.Tensor, apu: torch.Tensor, where: torch.Tensor,
            logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of every layer's position and APU logits [Ld, B, N, 4] with (u, v) set to
    `logits` [B, N, 2] where `where` [B, N] is True."""
    take = where[None, ..., None]
    position, apu = position.clone(), apu.clone()
    position[..., :2] = torch.where(take, logits[None], position[..., :2])
    apu[..., :2] = torch.where(take, logits[None], apu[..., :2])
    return position, apu


class DenseFlow:
    """DIS optical flow between 8-bit gray frames [H, W], cached per ordered frame pair until
    `forget` (one stream's frames)."""

    def __init__(self, preset: str = "fast"):
        self.preset = preset
        self._dis = create_dis(preset)
        self._flows: dict[tuple[int, int, int], np.ndarray] = {}

    def flow(self, key: tuple[int, int, int], source: np.ndarray,
             target: np.ndarray) -> np.ndarray:
        """Flow [H, W, 2] (pixels) from `source` to `target`; key: (item, source frame, target
        frame) for the cache."""
        if key not in self._flows:
            self._flows[key] = self._dis.calc(source, target, None)
        return self._flows[key]

    def forget(self, keep_from: int) -> None:
        """Drop the flows of pairs whose earlier frame is before `keep_from`."""
        for key in [k for k in self._flows if min(k[1], k[2]) < keep_from]:
            del self._flows[key]


class FlowPrior(TrackingHook):
    """The flow prior as a hook (no parameters). input_size: (H_in, W_in) of the network."""

    name = "flow_prior"

    def __init__(self, input_size: tuple[int, int]):
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def frame_features(self, frames: torch.Tensor, stages) -> list[torch.Tensor]:
        """The gray frame [Nb, 1, H_in, W_in] (0..255) of each network input frame."""
        return [gray_from_normalised(frames)]

    def start(self, options) -> "FlowPriorSession | None":
        if options is None or not options.flow_prior:
            return None
        return FlowPriorSession(self.name, self.input_size, options.flow_preset,
                                options.flow_consistency, options.flow_follows_occluded,
                                options.flow_anchor)


class FlowPriorSession(HookSession):
    """Moves the points of not-yet-decoded frames by the flow before each window (module
    docstring), and occludes the points it took out of the frame (after each window).
    consistency (with `with_consistency`): frame -> [B, N] forward-backward error
    of the step into that frame, pixels of the frames the flow runs on (NaN for points not
    moved)."""

    def __init__(self, name: str, input_size: tuple[int, int], preset: str = "fast",
                 with_consistency: bool = False, follow_occluded: bool = False,
                 anchor: bool = False):
        super().__init__(name)
        self.input_size = input_size
        self.flow = DenseFlow(preset)
        self.anchor = anchor
        self.with_consistency = with_consistency or anchor
        self.follow_occluded = follow_occluded
        self.decoded_end = 0  # frames before it were decoded by some window
        self.flow_size: tuple[int, int] | None = None  # (W, H) of the frames the flow runs on
        self.use_source = False
        self.input_wh = (input_size[1], input_size[0])
        self.consistency: dict[int, torch.Tensor] = {}
        # Anchor: each point's query-frame patch (normalised, [B, N, P]; NaN until taken).
        self.templates: np.ndarray | None = None
        self.num_points = 0
        # Points the flow took out of the frame: frame -> ([B, N] bool, [B, N, 2] unclamped
        # pixels of the frames the flow runs on, where the flow has them), on the CPU.
        self.outside: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _gray(self, extras: dict, item: int) -> np.ndarray:
        """The frame the flow runs on: the caller's gray source frame when the stream has one
        (`flow_resolution`) large enough for DIS, else the network input's gray frame."""
        if self.use_source and SOURCE in extras:
            return np.ascontiguousarray(extras[SOURCE][0][item].cpu().numpy())
        return extras[self.name][0][item, 0].to("cpu", torch.float32).numpy().astype(np.uint8)

    def _choose_frames(self, extras: dict) -> None:
        """First window: the frames the flow runs on and their size (W, H)."""
        source = extras.get(SOURCE)
        self.use_source = source is not None and min(source[0].shape[-2:]) >= MIN_SOURCE_SIDE
        height, width = self._gray(extras, 0).shape
        self.flow_size = (width, height)

    def add_points(self, count: int) -> None:
        """New points: per-frame state of the frames held so far gets `count` more entries
        (not moved, not out of the frame, no flow step)."""
        self.num_points += count

        def grow(tensor: torch.Tensor, fill) -> torch.Tensor:
            extra = tensor.new_full((tensor.shape[0], count, *tensor.shape[2:]), fill)
            return torch.cat((tensor, extra), 1)

        self.outside = {frame: (grow(out, False), grow(moved, 0.0))
                        for frame, (out, moved) in self.outside.items()}
        self.consistency = {frame: grow(error, float("nan"))
                            for frame, error in self.consistency.items()}

    def _patch_radius(self) -> int:
        return min(MAX_PATCH_RADIUS, max(3, round(max(self.flow_size) / 64)))

    def _to_flow(self, points: torch.Tensor) -> torch.Tensor:
        """Model coordinates -> pixels of the frames the flow runs on."""
        if self.flow_size == self.input_wh:
            return coords.model_to_input(points, self.input_wh)
        return coords.model_to_pixel(points, self.flow_size, self.input_wh)

    def _to_model(self, points: torch.Tensor) -> torch.Tensor:
        """Pixels of the frames the flow runs on -> model coordinates."""
        if self.flow_size == self.input_wh:
            return coords.input_to_model(points, self.input_wh)
        return coords.pixel_to_model(points, self.flow_size, self.input_wh)

    def _positions(self, state) -> torch.Tensor:
        """Last layer's positions [B, N, 2] of a state in flow-frame pixels (CPU, float32)."""
        return self._to_flow(
            torch.sigmoid(state.position_logits[-1, ..., :2].detach().float())).cpu()

    def _take_templates(self, window) -> None:
        """Query-frame patches of points whose query frame is in this window (the state at a
        query frame holds the query position)."""
        batch = window.query_frames.shape[0]
        radius = self._patch_radius()
        size = (2 * radius + 1) ** 2
        if self.templates is None:
            self.templates = np.full((batch, 0, size), np.nan, np.float32)
        if self.templates.shape[1] < self.num_points:
            grow = np.full((batch, self.num_points - self.templates.shape[1], size), np.nan,
                           np.float32)
            self.templates = np.concatenate([self.templates, grow], 1)
        start = int(window.frame_ids[0])
        query_frames = window.query_frames.cpu().numpy()
        missing = np.isnan(self.templates[..., 0])
        for offset in range(len(window.states)):
            for item in range(batch):
                take = np.flatnonzero(missing[item] & (query_frames[item] == start + offset))
                if not len(take):
                    continue
                points = self._positions(window.states[offset])[item].numpy()
                gray = self._gray(window.extras[offset], item)
                self.templates[item, take] = normalised_patches(
                    sample_patches(gray, points[take], radius))

    def before_window(self, window) -> None:
        start = int(window.frame_ids[0])
        first_new = max(self.decoded_end, start + 1)
        if self.flow_size is None:
            self._choose_frames(window.extras[0])
        size = self.flow_size
        if self.anchor:
            self._take_templates(window)
        states = list(window.states)
        for frame in range(first_new, start + len(states)):
            before, now = states[frame - 1 - start], states[frame - start]
            tracked = window.query_frames < frame  # [B, N]
            positions = self._positions(before)
            if frame - 1 in self.outside:  # carry on from where the flow has them, off the frame
                was_out, unclamped = self.outside[frame - 1]
                positions = torch.where(was_out[..., None], unclamped, positions)
            moved = positions.clone()
            error = torch.full(tracked.shape, float("nan"))
            for item in range(positions.shape[0]):
                if not bool(tracked[item].any()):
                    continue
                source = self._gray(window.extras[frame - 1 - start], item)
                target = self._gray(window.extras[frame - start], item)
                points = positions[item].numpy()
                forward = points + sample_flow(
                    self.flow.flow((item, frame - 1, frame), source, target), points)
                moved[item] = torch.from_numpy(forward).to(moved)
                if self.with_consistency:
                    back = forward + sample_flow(
                        self.flow.flow((item, frame, frame - 1), target, source), forward)
                    error[item] = torch.from_numpy(np.linalg.norm(back - points, axis=1))
            if self.with_consistency:
                self.consistency[frame] = torch.where(tracked.cpu(), error, torch.nan)
            limit = moved.new_tensor(size) - 0.5 + OUTSIDE_MARGIN_PX
            out = tracked.cpu() & ((moved < -0.5 - OUTSIDE_MARGIN_PX) | (moved > limit)).any(-1)
            self.outside[frame] = (out, moved)
            moved = moved.to(now.position_logits.device)
            logits = inverse_sigmoid(self._to_model(moved)).to(
                now.position_logits.dtype)
            position, apu = _placed(now.position_logits, now.apu_logits, tracked, logits)
            states[frame - start] = FrameState(position, apu, now.vis_logits, now.content)
        window.states = states

    def after_window(self, window, states):
        """Points the flow took out of the frame are occluded there (every layer's visibility
        logits set to OCCLUDED_LOGIT; positions stay the model's, which cannot leave the
        frame). With `anchor`, the flow's position where it is the authority (module
        docstring; every layer's position and APU position). With `follow_occluded`, a point the model calls occluded in a frame (visible
        probability at most 0.5, after its query frame) takes the position the flow gave it
        before the window (every layer's position and APU position)."""
        start = int(window.frame_ids[0])
        self.decoded_end = max(self.decoded_end, int(window.frame_ids[-1]) + 1)
        marked = []
        for offset, state in enumerate(states):
            out, moved = self.outside.get(start + offset, (None, None))
            if out is None:
                marked.append(state)
                continue
            vis = state.vis_logits.clone()
            position, apu = state.position_logits, state.apu_logits
            error = self.consistency.get(start + offset)  # NaN (not moved) compares False
            reliable = None if error is None else error < ANCHOR_FB_PX * max(self.flow_size) / 256
            # The logits of the flow's positions, for the anchor and follow_occluded.
            flow_logits = inverse_sigmoid(self._to_model(moved)).to(
                device=position.device, dtype=position.dtype) if (
                    self.anchor or self.follow_occluded) else None
            if self.anchor and reliable is not None and bool(reliable.any()):
                visible = (torch.sigmoid(vis[-1, ..., 1]) > 0.5).cpu()
                keep = self._flow_wins(window, offset, state,
                                       marked[offset - 1] if offset > 0 else None, moved,
                                       reliable & ~out, visible)
                if bool(keep.any()):
                    position, apu = _placed(position, apu, keep.to(position.device),
                                            flow_logits)
            if self.follow_occluded:
                hidden = (torch.sigmoid(vis[-1, ..., 1]) <= 0.5).cpu() & (
                    window.query_frames.cpu() < start + offset)
                if bool(hidden.any()):
                    position, apu = _placed(position, apu, hidden.to(position.device),
                                            flow_logits)
            out = out.to(vis.device)[None, ..., None]  # [1, B, N, 1]
            vis[..., 1:2] = torch.where(out, torch.full_like(vis[..., 1:2], OCCLUDED_LOGIT),
                                        vis[..., 1:2])
            marked.append(FrameState(position, apu, vis, state.content))
        return marked

    def _flow_wins(self, window, offset: int, state, previous, moved: torch.Tensor,
                   candidates: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """[B, N] bool: where the flow's position replaces the decoder's (`flow_anchor`, module
        docstring), among `candidates` [B, N] (reliable flow steps inside the frame).
        previous: the final state of the frame before (None when it is not in the window)."""
        decoded = self._positions(state).numpy()
        before = None if previous is None else self._positions(previous).numpy()
        moved, visible = moved.numpy(), visible.numpy()
        near_px = ANCHOR_RADIUS_PX * max(self.flow_size) / 256
        radius = self._patch_radius()
        wins = np.zeros(decoded.shape[:2], bool)
        for item in range(decoded.shape[0]):
            points = np.flatnonzero(candidates[item].numpy())
            if not len(points):
                continue
            gray = self._gray(window.extras[offset], item).astype(np.float32)
            flow_at, model_at = moved[item, points], decoded[item, points]
            # Against the query-frame patch (without a template the scores are NaN, the
            # comparison False: the flow wins).
            flow_score, model_score = _correlations(
                gray, self.templates[item, points], flow_at, model_at, radius)
            flow_better = ~(model_score > flow_score + ANCHOR_MARGIN)
            far = np.linalg.norm(model_at - flow_at, axis=1) > near_px
            if before is None:  # the frame before is not in this window: far means lost
                flow_better |= far
            elif far.any():  # far apart: against the patch in the frame before
                gray_before = self._gray(window.extras[offset - 1], item).astype(np.float32)
                picked = np.flatnonzero(far)
                template = normalised_patches(sample_patches(
                    gray_before, before[item, points[picked]], radius))
                recent_flow, recent_model = _correlations(
                    gray, template, flow_at[picked], model_at[picked], radius)
                flow_better[picked] = ~(recent_model > recent_flow + ANCHOR_MARGIN)
            seen = flow_score > ANCHOR_HIDDEN_NCC
            wins[item, points] = np.where(visible[item, points], flow_better, seen)
        return torch.from_numpy(wins)

    def release(self, keep_from: int) -> None:
        self.flow.forget(keep_from)
        for frame in [f for f in self.consistency if f < keep_from]:
            del self.consistency[frame]
        # The last freed frame's flags stay: the next new frame continues from them.
        for frame in [f for f in self.outside if f < keep_from - 1]:
            del self.outside[frame]
