"""Neighbour motion correction (ours, not in the paper): a point whose motion from one frame to
the next departs from its neighbours' by more than a threshold has jumped onto something else;
its position in that frame is replaced by where its neighbours' motion takes it.

Why: most of what the small model gets wrong are points it has lost, and a point is mostly lost
by one jump (onto a similar texture, or onto an occluder while its surface is hidden). Real
scenes move smoothly in space: the points around a tracked point move with it (a camera pan, a
rigid object, a deforming surface), a lost point jumps away from them. The correction runs in
the window loop (`TrackStream`), on each window's decoded frames in order before they are
stored and carried to the next window, so the next window starts from the corrected position
and the decoder (with our correlation update, which keeps the query's template) can lock on
to the point again. It is causal, keeps one frame of positions beyond what the stream holds, and
needs no training.

For frame t and every point updated at t and tracked at t - 1 (its query frame is before t):
motion m_i = p_i(t) - p_i(t - 1) in input pixels of the network; its K nearest neighbours by
position at t - 1 among those points; their coordinate-wise median motion m_med and their
spread s = median_j |m_j - m_med| (lower medians: the 4th smallest of 8). When
|m_i - m_med| - s is above the threshold, p_i(t) becomes p_i(t - 1) + m_med (every decoder
layer's position and APU position; its visibility stays the model's). The spread keeps points
at the edge of a moving object, whose neighbours move two ways, from being pulled onto the
background. The correction needs K + 1 points tracked in a frame; with fewer it does nothing.
The frame before a window's first frame is kept by the stream (`WindowBatch.previous_positions`),
so every frame is checked, offline and online alike. It attaches to the window loop as the hook
`MotionCorrection` (after each window), on when `TrackingOptions.motion_correction_px` > 0.
docs/motion_correction.md has the measurements behind the defaults.
"""

from __future__ import annotations

import torch

from taptr import coords
from taptr.models.taptrv2.common import inverse_sigmoid
from taptr.models.taptrv2.hooks import HookSession, TrackingHook
from taptr.models.taptrv2.windows import FrameState

_ROW_BLOCK = 1024  # distance rows computed at once (bounds memory at many points)


def neighbour_motion(previous: torch.Tensor, current: torch.Tensor, checked: torch.Tensor,
                     neighbours: int) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each point's motion departs from its neighbours', beyond their own spread.

    previous, current: [N, 2] positions (any unit; the results have the same one); checked:
    [N] bool, the points that take part (tracked at both frames). Returns (excess [N],
    median [N, 2]): for checked points, the coordinate-wise median motion m_med of the
    `neighbours` checked points nearest to each at `previous` (motion = current - previous),
    and |m_i - m_med| - spread, where spread is the median of |m_j - m_med| over those
    neighbours (neighbours that disagree, as across the edge of a moving object, raise the bar);
    0 elsewhere, and 0 everywhere when fewer than neighbours + 1 points are checked.
    """
    count = previous.shape[0]
    excess = torch.zeros(count, dtype=torch.float32, device=previous.device)
    median = torch.zeros(count, 2, dtype=torch.float32, device=previous.device)
    index = checked.nonzero().flatten()
    if index.numel() < neighbours + 1:
        return excess, median
    start = previous[index].float()
    motion = current[index].float() - start
    excesses, medians = [], []
    for first in range(0, index.numel(), _ROW_BLOCK):
        rows = slice(first, first + _ROW_BLOCK)
        distance = torch.cdist(start[rows], start)
        own = torch.arange(distance.shape[0], device=distance.device)
        distance[own, own + first] = float("inf")  # a point is not its own neighbour
        nearest = distance.topk(neighbours, dim=1, largest=False).indices  # [n, K]
        block_median = motion[nearest].median(dim=1).values
        spread = (motion[nearest] - block_median[:, None]).norm(dim=-1).median(dim=1).values
        excesses.append((motion[rows] - block_median).norm(dim=-1) - spread)
        medians.append(block_median)
    excess[index] = torch.cat(excesses)
    median[index] = torch.cat(medians)
    return excess, median


def correct_jumps(position_logits: list[torch.Tensor], apu_logits: list[torch.Tensor],
                  previous: torch.Tensor | None, first_frame: int, query_frames: torch.Tensor,
                  threshold_px: float, neighbours: int, input_size: tuple[int, int]
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Apply the neighbour motion correction to a window's frames, oldest first.

    position_logits, apu_logits: per frame [Ld, B, N, 4] (every decoder layer's position and
    APU position, logit space) of frames first_frame, first_frame + 1, ...; previous: the
    position logits of frame first_frame - 1 (None when unknown: the first frame is then not
    checked); query_frames: [B, N]; threshold_px: in input pixels; input_size: (W_in, H_in)
    of the network (`coords.model_to_input`). Returns the corrected position and APU
    logits per frame (new tensors where a point was corrected, the given ones elsewhere); a
    corrected point's (u, v) becomes the same in every layer's position and APU position. The
    correction is a decision, not a differentiable function: a corrected position carries no
    gradient.
    """
    def pixels(logits: torch.Tensor) -> torch.Tensor:  # [B, N, 2] input pixels
        return coords.model_to_input(torch.sigmoid(logits[-1, ..., :2].detach().float()),
                                     input_size)

    corrected, corrected_apu = [], []
    for offset, (logits, apu) in enumerate(zip(position_logits, apu_logits)):
        if previous is not None:
            before, now = pixels(previous), pixels(logits)
            checked = query_frames < first_frame + offset
            for item in range(now.shape[0]):
                excess, median = neighbour_motion(before[item], now[item], checked[item],
                                                  neighbours)
                jumped = excess > threshold_px
                if bool(jumped.any()):
                    # inverse_sigmoid clamps to (0, 1) away from the edges
                    replacement = inverse_sigmoid(coords.input_to_model(before[item] + median,
                                                                        input_size))  # [N, 2]
                    logits, apu = logits.clone(), apu.clone()
                    for target in (logits, apu):
                        target[:, item, :, :2] = torch.where(
                            jumped[None, :, None], replacement[None].to(target.dtype),
                            target[:, item, :, :2])
        corrected.append(logits)
        corrected_apu.append(apu)
        previous = logits
    return corrected, corrected_apu


class MotionCorrection(TrackingHook):
    """The neighbour motion correction as a hook (no parameters). input_size: (H_in, W_in) of
    the network."""

    name = "motion_correction"

    def __init__(self, input_size: tuple[int, int]):
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def start(self, options) -> "MotionCorrectionSession | None":
        if options is None or options.motion_correction_px <= 0:
            return None
        return MotionCorrectionSession(self.name, options.motion_correction_px,
                                       options.motion_correction_neighbours, self.input_size)


class MotionCorrectionSession(HookSession):
    """Corrects each window's decoded frames (`correct_jumps`) before they are stored."""

    def __init__(self, name: str, threshold_px: float, neighbours: int,
                 input_size: tuple[int, int]):
        super().__init__(name)
        self.threshold_px = threshold_px
        self.neighbours = neighbours
        self.input_size = input_size

    def after_window(self, window, states: list[FrameState]) -> list[FrameState]:
        height, width = self.input_size
        positions, apu = correct_jumps([s.position_logits for s in states],
                                       [s.apu_logits for s in states], window.previous_positions,
                                       int(window.frame_ids[0]), window.query_frames,
                                       self.threshold_px, self.neighbours, (width, height))
        return [FrameState(new, new_apu, s.vis_logits, s.content)
                for new, new_apu, s in zip(positions, apu, states)]
