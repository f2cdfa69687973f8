"""Dense optical-flow motion prior (ours, not in the paper).

TAPTRv2 starts each frame that no window has decoded yet from a copy of the last decoded
position (the official window loop's propagation). This hook starts it where dense optical
flow takes the point instead: before a window is decoded, each frame f of it that no earlier
window decoded gets, for every point tracked at f - 1 (query frame before f), the position at
f - 1 moved by the flow from f - 1 to f, sampled bilinearly at that position; every decoder
layer's position and APU position are set, so the decoder refines from there.

The flow is OpenCV's DIS (Kroeger et al., ECCV 2016; `cv2.DISOpticalFlow`, the preset of the
option `flow_preset`, "fast" by default) on the network's input frames turned gray, at the
network's input resolution, computed once per frame pair. With the option `flow_consistency`
the backward flow is computed too, and the forward-backward error |p + F(p) + B(p + F(p)) - p|
of each step (input pixels) is kept per frame as a reliability signal (`consistency`).

A point the flow takes out of the frame (more than `OUTSIDE_MARGIN_PX` beyond an edge) is
occluded there: after each window its visibility logits are set to `OCCLUDED_LOGIT` in those
frames (the network's positions cannot leave the frame; without this a point that left stayed
pinned to the border, visible). The flow carries such a point on from where it has it, off the
frame (the flow of the nearest border pixel), until it comes back in. And a point the model
calls occluded in a frame can follow the flow there (option `flow_follows_occluded`, off by
default): its position becomes the one the flow gave it before the window, not the decoder's
guess. It helps where points hide behind themselves or leave with the camera, and hurts where
an occluder passes over them: the flow there is the occluder's (docs/flow_prior.md).

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
from taptr.models.taptrv2.windows import FrameState
from taptr.preprocess import IMAGENET_MEAN, IMAGENET_STD

# A point the flow takes more than this many input pixels beyond the frame's edge has left the
# frame: occluded there (a point inside, however near the border, keeps the model's visibility).
OUTSIDE_MARGIN_PX = 1.0
# Visibility logit of a point out of the frame (sigmoid: 4.5e-5).
OCCLUDED_LOGIT = -10.0
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
                                options.flow_consistency, options.flow_follows_occluded)


class FlowPriorSession(HookSession):
    """Moves the points of not-yet-decoded frames by the flow before each window (module
    docstring), and occludes the points it took out of the frame (after each window).
    consistency (with `with_consistency`): frame -> [B, N] forward-backward error
    of the step into that frame, input pixels (NaN for points not moved)."""

    def __init__(self, name: str, input_size: tuple[int, int], preset: str = "fast",
                 with_consistency: bool = False, follow_occluded: bool = False):
        super().__init__(name)
        self.input_size = input_size
        self.flow = DenseFlow(preset)
        self.with_consistency = with_consistency
        self.follow_occluded = follow_occluded
        self.decoded_end = 0  # frames before it were decoded by some window
        self.consistency: dict[int, torch.Tensor] = {}
        # Points the flow took out of the frame: frame -> ([B, N] bool, [B, N, 2] unclamped
        # input pixels where the flow has them), on the CPU.
        self.outside: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _gray(extras: dict, name: str, item: int) -> np.ndarray:
        return extras[name][0][item, 0].to("cpu", torch.float32).numpy().astype(np.uint8)

    def before_window(self, window) -> None:
        start = int(window.frame_ids[0])
        first_new = max(self.decoded_end, start + 1)
        height, width = self.input_size
        size = (width, height)
        states = list(window.states)
        for frame in range(first_new, start + len(states)):
            before, now = states[frame - 1 - start], states[frame - start]
            tracked = window.query_frames < frame  # [B, N]
            positions = coords.model_to_input(
                torch.sigmoid(before.position_logits[-1, ..., :2].detach().float()), size).cpu()
            if frame - 1 in self.outside:  # carry on from where the flow has them, off the frame
                was_out, unclamped = self.outside[frame - 1]
                positions = torch.where(was_out[..., None], unclamped, positions)
            moved = positions.clone()
            error = torch.full(tracked.shape, float("nan"))
            for item in range(positions.shape[0]):
                if not bool(tracked[item].any()):
                    continue
                source = self._gray(window.extras[frame - 1 - start], self.name, item)
                target = self._gray(window.extras[frame - start], self.name, item)
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
            logits = inverse_sigmoid(coords.input_to_model(moved, size)).to(
                now.position_logits.dtype)
            position, apu = _placed(now.position_logits, now.apu_logits, tracked, logits)
            states[frame - start] = FrameState(position, apu, now.vis_logits, now.content)
        window.states = states

    def after_window(self, window, states):
        """Points the flow took out of the frame are occluded there (every layer's visibility
        logits set to OCCLUDED_LOGIT; positions stay the model's, which cannot leave the
        frame). With `follow_occluded`, a point the model calls occluded in a frame (visible
        probability at most 0.5, after its query frame) takes the position the flow gave it
        before the window (every layer's position and APU position)."""
        start = int(window.frame_ids[0])
        self.decoded_end = max(self.decoded_end, int(window.frame_ids[-1]) + 1)
        height, width = self.input_size
        marked = []
        for offset, state in enumerate(states):
            out, moved = self.outside.get(start + offset, (None, None))
            if out is None:
                marked.append(state)
                continue
            vis = state.vis_logits.clone()
            position, apu = state.position_logits, state.apu_logits
            if self.follow_occluded:
                hidden = (torch.sigmoid(vis[-1, ..., 1]) <= 0.5).cpu() & (
                    window.query_frames.cpu() < start + offset)
                if bool(hidden.any()):
                    logits = inverse_sigmoid(coords.input_to_model(
                        moved.to(position.device), (width, height))).to(position.dtype)
                    position, apu = _placed(position, apu, hidden.to(position.device), logits)
            out = out.to(vis.device)[None, ..., None]  # [1, B, N, 1]
            vis[..., 1:2] = torch.where(out, torch.full_like(vis[..., 1:2], OCCLUDED_LOGIT),
                                        vis[..., 1:2])
            marked.append(FrameState(position, apu, vis, state.content))
        return marked

    def release(self, keep_from: int) -> None:
        self.flow.forget(keep_from)
        for frame in [f for f in self.consistency if f < keep_from]:
            del self.consistency[frame]
        # The last freed frame's flags stay: the next new frame continues from them.
        for frame in [f for f in self.outside if f < keep_from - 1]:
            del self.outside[frame]
