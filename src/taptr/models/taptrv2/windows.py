"""The window loop of TAPTRv2 as a stream: frames in, final tracks out (paper section 3.5,
official sliding-window inference).

This module schedules, buffers and frees; the arithmetic of a window is the model's
(`WindowArithmetic.decode_window` and `.propagate`, shared by `TAPTRv2` and the ONNX Runtime
backend). Frames are encoded as they arrive; a window of `window_size` frames is decoded as
soon as its frames are present (windows start every `window_stride` frames; the last one is
aligned to the video's end, docs/architecture.md, "Sliding windows"). After each window its
states are stored and the last frame's state is propagated to every later frame. A frame is
returned once no later window can change it, and its features and states are freed: memory
does not grow with the video's length. Additions take part through their hook sessions
(`taptrv2.hooks`): the stream keeps each hook's per-frame features with the frame's memory and
calls the sessions at the points the hook interface names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from taptr.models.taptrv2.common import inverse_sigmoid
from taptr.models.taptrv2.hooks import HookSession
from taptr.models.taptrv2.levels import LevelLayout
from taptr.text import count

# Key of the caller's gray source frames (`TrackStream.push(frames, sources)`) in each frame's
# `extras`, beside the hooks' own frame features.
SOURCE = "source"


@dataclass
class FrameState:
    """Per-frame tracking state of every point.

    position_logits: [Ld, B, N, 4] each decoder layer's position (logit space);
    apu_logits: [Ld, B, N, 4] each layer's APU position (logit space);
    vis_logits: [Ld, B, N, K]; content: [B, N, C].
    """

    position_logits: torch.Tensor
    apu_logits: torch.Tensor
    vis_logits: torch.Tensor
    content: torch.Tensor

    def extended(self, other: "FrameState") -> "FrameState":
        """Append the points of `other` (same frame) after ours."""
        return FrameState(torch.cat((self.position_logits, other.position_logits), 2),
                          torch.cat((self.apu_logits, other.apu_logits), 2),
                          torch.cat((self.vis_logits, other.vis_logits), 2),
                          torch.cat((self.content, other.content), 1))


@dataclass
class TrackChunk:
    """Final results of consecutive frames [start, start + t).

    positions: [B, t, N, 2] model coordinates; vis_logits: [B, t, N, K];
    layer_position_logits, layer_apu_logits: [Ld, B, t, N, 4]; layer_vis_logits: [Ld, B, t, N, K].
    """

    start: int
    positions: torch.Tensor
    vis_logits: torch.Tensor
    layer_position_logits: torch.Tensor
    layer_apu_logits: torch.Tensor
    layer_vis_logits: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.positions.shape[1]


def window_starts(num_frames: int, size: int, stride: int) -> list[int]:
    """Official window schedule: every `stride` frames, last window aligned to the end.

    T = 24 -> [0, 4, 8, 12, 16]; T = 10 -> [0, 2]; T < size -> [0] (one shorter window).
    """
    if num_frames <= size:
        return [0]
    count = (num_frames - size) // stride + 1
    starts = [index * stride for index in range(count)]
    if starts[-1] + size < num_frames:
        starts.append(num_frames - size)
    return starts


@dataclass
class _Queries:
    points: torch.Tensor  # [B, N, 2] model coordinates
    frames: torch.Tensor  # [B, N] int64
    initialised: torch.Tensor  # [B, N] bool: content sampled from the query frame
    initial_content: torch.Tensor  # [B, N, C]


@dataclass
class WindowBatch:
    """One window as the stream hands it to `TAPTRv2.decode_window`.

    frame_ids: [W] absolute frame indices; states: those frames' `FrameState`s; memory: per
    frame [B, S, C]; extras: per frame, per hook name, its `frame_features` of that frame
    (tensors [B, ...]); query_frames: [B, N]; initial_content: [B, N, C] (content sampled at
    each query frame); previous_positions: [Ld, B, N, 4] position logits of the frame before
    the window's first one (None when the stream no longer knows it); layer_inputs: per hook
    name, the tensors its `after_layer` reads (filled from the sessions' `layer_inputs`).
    """

    frame_ids: torch.Tensor
    states: list[FrameState]
    memory: list[torch.Tensor]
    extras: list[dict[str, list[torch.Tensor]]]
    layout: LevelLayout
    query_frames: torch.Tensor
    initial_content: torch.Tensor
    previous_positions: torch.Tensor | None = None
    layer_inputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)


class TrackStream:
    """Incremental TAPTRv2 inference (and training forward) over a growing video.

    model: a `TAPTRv2`, or anything with the `WindowArithmetic` interface (the ONNX Runtime
    backend).

    Use `push(frames)` with frames [B, t, 3, H, W], then `finish()`. Each returns a `TrackChunk`
    (or None when no frame became final). With `num_frames` given the windows are exactly the
    official ones; without it the end-aligned last window is decided at `finish()`.
    sessions: the hooks' `HookSession`s of this stream, called in order (none: the paper's
    loop). long_video_padding: the official evaluation's long-video quirk (videos over 24
    frames keep the old content in all but every (T // 24)-th window; docs/architecture.md).
    """

    def __init__(self, model, query_points: torch.Tensor, query_frames: torch.Tensor,
                 num_frames: int | None = None, point_chunk: int | None = None,
                 sessions: list[HookSession] | tuple = (), long_video_padding: bool = False):
        config = model.config
        self.model = model
        self.sessions = list(sessions)
        self.window_size = config.window_size
        self.window_stride = config.window_stride
        self.num_frames = num_frames
        self.point_chunk = point_chunk
        self.content_padding_gap = 1
        if long_video_padding and num_frames is not None and num_frames > 24:
            self.content_padding_gap = num_frames // 24  # eval-only long-video quirk
        self.schedule = (window_starts(num_frames, self.window_size, self.window_stride)
                         if num_frames is not None else None)
        self.device, self.dtype = model.device, model.dtype
        self.batch = query_points.shape[0]
        self.received = 0
        self.emitted = 0
        self.windows_run = 0
        self.last_window_end = 0
        self.frames: list[FrameState] = []  # frames [self.emitted - len(self.frames) ..)
        self.first_buffered = 0
        # (frame, position logits [Ld, B, N, 4]) of the last freed frame: a window starting
        # right after it gets them as `previous_positions`.
        self.last_freed: tuple[int, torch.Tensor] | None = None
        self.memory: dict[int, torch.Tensor] = {}
        self.extras: dict[int, dict[str, list[torch.Tensor]]] = {}  # hooks' frame features
        self.layout = None
        self.queries = _Queries(
            torch.zeros(self.batch, 0, 2, device=self.device, dtype=self.dtype),
            torch.zeros(self.batch, 0, dtype=torch.long, device=self.device),
            torch.zeros(self.batch, 0, dtype=torch.bool, device=self.device),
            torch.zeros(self.batch, 0, config.hidden_dim, device=self.device, dtype=self.dtype))
        self.future = self._initial_state(self.queries.points)
        self.add_queries(query_points, query_frames)

    # ----------------------------------------------------------------------------- queries
    @property
    def num_points(self) -> int:
        return self.queries.points.shape[1]

    def _initial_state(self, points: torch.Tensor) -> FrameState:
        """State of points before any window: the query position, 'visible' one-hot."""
        config = self.model.config
        layers = config.decoder_layers
        batch, count = points.shape[:2]
        logits = torch.cat((inverse_sigmoid(points), torch.zeros_like(points)), -1)
        logits = logits[None].expand(layers, batch, count, 4)
        vis = torch.zeros(layers, batch, count, config.num_vis_logits, device=self.device,
                          dtype=self.dtype)
        vis[..., 1] = 1.0
        content = torch.zeros(batch, count, config.hidden_dim, device=self.device,
                              dtype=self.dtype)
        return FrameState(logits, logits, vis, content)

    def add_queries(self, query_points: torch.Tensor, query_frames: torch.Tensor) -> None:
        """Add points [B, n, 2] (model coordinates) with query frames [B, n].

        A query frame must not be earlier than the oldest frame still held by the stream.
        """
        query_points = query_points.to(self.device, self.dtype)
        query_frames = query_frames.to(self.device, torch.long)
        oldest = min(self.memory) if self.memory else self.received
        if query_frames.numel() and int(query_frames.min()) < oldest:
            raise ValueError(f"query frame {int(query_frames.min())} is no longer held by the "
                             f"stream (oldest frame held: {oldest})")
        new_state = self._initial_state(query_points)
        self.frames = [state.extended(new_state) for state in self.frames]
        if self.last_freed is not None:
            frame, logits = self.last_freed
            self.last_freed = (frame, torch.cat((logits, new_state.position_logits), 2))
        self.future = self.future.extended(new_state)
        count = query_points.shape[1]
        self.queries = _Queries(
            torch.cat((self.queries.points, query_points), 1),
            torch.cat((self.queries.frames, query_frames), 1),
            torch.cat((self.queries.initialised,
                       torch.zeros(self.batch, count, dtype=torch.bool, device=self.device)), 1),
            torch.cat((self.queries.initial_content, new_state.content), 1))
        for session in self.sessions:
            session.add_points(count)
        for frame in sorted(self.memory):
            self._initialise_queries(frame)

    def _initialise_queries(self, frame: int) -> None:
        """Sample the content of points whose query frame is `frame` (docs/architecture.md,
        section 3.5)."""
        starting = (self.queries.frames == frame) & ~self.queries.initialised
        if not bool(starting.any()):
            return
        features = self.model.query_features(self.memory[frame], self.layout, self.queries.points)
        mask = starting[..., None]
        initial = torch.where(mask, features, self.queries.initial_content)
        self.queries.initial_content = initial
        for session in self.sessions:
            session.on_query_frame(self.extras[frame].get(session.name), self.queries.points,
                                   starting)
        self.queries.initialised = self.queries.initialised | starting
        self.frames = [FrameState(s.position_logits, s.apu_logits, s.vis_logits,
                                  torch.where(mask, initial, s.content)) for s in self.frames]
        self.future = FrameState(self.future.position_logits, self.future.apu_logits,
                                 self.future.vis_logits,
                                 torch.where(mask, initial, self.future.content))

    # ----------------------------------------------------------------------------- frames
    def push(self, frames: torch.Tensor, sources: torch.Tensor | None = None) -> TrackChunk | None:
        """Add frames [B, t, 3, H, W] (normalised model input); returns newly final frames.
        sources: optional gray frames [B, t, H_s, W_s] uint8 at a resolution of the caller's
        choosing, kept with each frame for the hooks' sessions (`extras[frame]["source"]`)."""
        if frames.shape[0] != self.batch:
            raise ValueError(f"expected a batch of {count(self.batch, 'video')}, "
                             f"got {frames.shape[0]}")
        if self.num_frames is not None and self.received + frames.shape[1] > self.num_frames:
            raise ValueError("more frames pushed than num_frames")
        frames = frames.to(self.device, self.dtype)
        hooks = [session.name for session in self.sessions]
        for start in range(0, frames.shape[1], self.window_size):
            chunk = frames[:, start:start + self.window_size]
            length = chunk.shape[1]
            features = self.model.encode(chunk.flatten(0, 1), hooks)
            self.layout = features.layout
            memory = features.memory.view(self.batch, length, *features.memory.shape[1:])
            extras = {name: [t.view(self.batch, length, *t.shape[1:]) for t in tensors]
                      for name, tensors in features.extras.items()}
            for offset in range(length):
                frame = self.received
                self.memory[frame] = memory[:, offset]
                self.extras[frame] = {name: [t[:, offset] for t in tensors]
                                      for name, tensors in extras.items()}
                if sources is not None:
                    self.extras[frame][SOURCE] = [sources[:, start + offset]]
                self.frames.append(self.future)
                self.received += 1
                self._initialise_queries(frame)
        return self._advance(final=False)

    def finish(self) -> TrackChunk | None:
        """Run the end-aligned last window and return every remaining frame."""
        if self.num_frames is not None and self.received != self.num_frames:
            raise ValueError(f"stream got {self.received} of {count(self.num_frames, 'frame')}")
        return self._advance(final=True)

    def run(self, batches: Iterable[torch.Tensor]) -> Iterator[TrackChunk]:
        """Push every batch of frames [B, t, 3, H, W] (or (frames, sources) pairs, as `push`),
        then finish; yields each non-empty `TrackChunk` (the one loop that feeds a stream, for
        training and tracking alike)."""
        for batch in batches:
            chunk = self.push(*batch) if isinstance(batch, tuple) else self.push(batch)
            if chunk is not None:
                yield chunk
        chunk = self.finish()
        if chunk is not None:
            yield chunk

    def _next_window(self, final: bool) -> int | None:
        if self.schedule is not None:
            if self.windows_run < len(self.schedule):
                start = self.schedule[self.windows_run]
                if start + min(self.window_size, self.num_frames) <= self.received:
                    return start
            return None
        start = self.windows_run * self.window_stride
        if start + self.window_size <= self.received:
            return start
        if final and self.received and (self.windows_run == 0 or self.last_window_end < self.received):
            return max(0, self.received - self.window_size)
        return None

    def _advance(self, final: bool) -> TrackChunk | None:
        while (start := self._next_window(final)) is not None:
            end = min(start + self.window_size, self.received)
            self._run_window(start, end)
            self.windows_run += 1
            self.last_window_end = end
        if final:
            ready = self.received
        elif self.schedule is not None:
            ready = (self.schedule[self.windows_run] if self.windows_run < len(self.schedule)
                     else self.num_frames)
        else:
            ready = self.windows_run * self.window_stride
        chunk = self._emit(min(ready, self.received))
        keep_from = self.emitted if self.schedule is not None or final else max(
            0, min(self.emitted, self.received - self.window_size))
        self._release(keep_from)
        return chunk

    def _state_index(self, frame: int) -> int:
        return frame - self.first_buffered

    def _run_window(self, start: int, end: int) -> None:
        """Hand frames [start, end) to the model, store what it returns, and propagate the
        window's last frame to every later frame (held ones and the future)."""
        first, last = self._state_index(start), self._state_index(end)
        window = WindowBatch(
            frame_ids=torch.arange(start, end, device=self.device),
            states=self.frames[first:last],
            memory=[self.memory[frame] for frame in range(start, end)],
            extras=[self.extras[frame] for frame in range(start, end)],
            layout=self.layout,
            query_frames=self.queries.frames,
            initial_content=self.queries.initial_content,
            previous_positions=self._positions_before(start))
        for session in self.sessions:
            session.before_window(window)
        for session in self.sessions:
            inputs = session.layer_inputs(window)
            if inputs is not None:
                window.layer_inputs[session.name] = inputs
        states = self.model.decode_window(window, self.point_chunk)
        if states is None:  # no point is updated in this window
            return
        for session in self.sessions:
            states = session.after_window(window, states)
        self.frames[first:last] = states
        tail = states[-1]
        with_content = self.windows_run % self.content_padding_gap == 0
        for frame in range(end, self.received):
            index = self._state_index(frame)
            self.frames[index] = self.model.propagate(tail, self.frames[index], with_content)
        self.future = self.model.propagate(tail, self.future, with_content)

    def _positions_before(self, start: int) -> torch.Tensor | None:
        """Position logits [Ld, B, N, 4] of frame start - 1 (held, or the last freed one);
        None when the stream no longer knows them (or start is 0)."""
        held = start - 1 - self.first_buffered
        if 0 <= held < len(self.frames):
            return self.frames[held].position_logits
        if self.last_freed is not None and self.last_freed[0] == start - 1:
            return self.last_freed[1]
        return None

    def _emit(self, ready: int) -> TrackChunk | None:
        if ready <= self.emitted:
            return None
        states = self.frames[self._state_index(self.emitted):self._state_index(ready)]
        position_logits = torch.stack([s.position_logits for s in states], 2)
        chunk = TrackChunk(
            start=self.emitted,
            positions=torch.sigmoid(position_logits[-1])[..., :2],
            vis_logits=torch.stack([s.vis_logits[-1] for s in states], 1),
            layer_position_logits=position_logits,
            layer_apu_logits=torch.stack([s.apu_logits for s in states], 2),
            layer_vis_logits=torch.stack([s.vis_logits for s in states], 2))
        self.emitted = ready
        return chunk

    def _release(self, keep_from: int) -> None:
        """Free the states and features of frames before `keep_from`."""
        drop = keep_from - self.first_buffered
        if drop > 0:
            self.last_freed = (keep_from - 1, self.frames[drop - 1].position_logits)
            self.frames = self.frames[drop:]
            self.first_buffered = keep_from
        for frame in [f for f in self.memory if f < keep_from]:
            del self.memory[frame]
            del self.extras[frame]
        for session in self.sessions:
            session.release(keep_from)
