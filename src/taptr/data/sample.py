"""`TrackingSample`: one training clip with its point tracks, shared by every data source.

The synthetic scene engine (`taptr.data.scenes`) and the Kubric reader (`taptr.data.kubric`)
both produce it; the trainer batches it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from taptr.coords import pixel_to_tapvid


@dataclass
class TrackingSample:
    """A video clip and N ground-truth point tracks.

    Attributes:
        video: uint8 `[T, H, W, 3]` RGB frames.
        tracks: float32 `[T, N, 2]` pixel (x, y), pixel centres at integers, every frame (also
            where the point is not visible).
        visible: bool `[T, N]`, True where the point is visible (not occluded, inside the frame).
        query_frames: int64 `[N]`, a frame where each point is visible; the point's query is
            `(query_frames[n], *tracks[query_frames[n], n])`.
        name: an identifier of the clip (data source and seed or sequence name).
    """

    video: torch.Tensor
    tracks: torch.Tensor
    visible: torch.Tensor
    query_frames: torch.Tensor
    name: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.tracks.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return int(self.video.shape[1]), int(self.video.shape[2])

    def to(self, device: torch.device | str) -> "TrackingSample":
        """The same sample with every tensor on `device`."""
        return TrackingSample(
            video=self.video.to(device),
            tracks=self.tracks.to(device),
            visible=self.visible.to(device),
            query_frames=self.query_frames.to(device),
            name=self.name,
        )

    def queries(self) -> torch.Tensor:
        """float32 `[N, 3]` rows (t, x, y) in pixels (the project's query layout)."""
        point_index = torch.arange(self.num_points, device=self.tracks.device)
        query_xy = self.tracks[self.query_frames, point_index]
        return torch.cat([self.query_frames.to(self.tracks.dtype)[:, None], query_xy], dim=1)

    def check(self) -> None:
        """Raise ValueError if shapes, dtypes or the query-frame visibility are inconsistent."""
        num_frames, height, width, channels = self.video.shape
        num_points = self.tracks.shape[1]
        expected = {
            "video": (self.video, torch.uint8, (num_frames, height, width, 3)),
            "tracks": (self.tracks, torch.float32, (num_frames, num_points, 2)),
            "visible": (self.visible, torch.bool, (num_frames, num_points)),
            "query_frames": (self.query_frames, torch.int64, (num_points,)),
        }
        for field_name, (tensor, dtype, shape) in expected.items():
            if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                raise ValueError(
                    f"{field_name}: expected {dtype} {shape}, got {tensor.dtype} "
                    f"{tuple(tensor.shape)}"
                )
        if num_points and not bool(self.visible[self.query_frames, torch.arange(num_points)].all()):
            raise ValueError("some points are not visible at their query frame")

    def to_tapvid(self) -> dict:
        """This clip as a TAP-Vid pickle entry.

        Returns {"video": uint8 [T, H, W, 3], "points": float32 [N, T, 2] normalised
        u = (x + 0.5) / W, "occluded": bool [N, T]} as NumPy arrays.
        """
        height, width = self.size
        points = pixel_to_tapvid(self.tracks.detach().cpu().double(), (width, height))
        return {
            "video": self.video.detach().cpu().numpy().astype(np.uint8),
            "points": points.permute(1, 0, 2).numpy().astype(np.float32),
            "occluded": (~self.visible.detach().cpu()).permute(1, 0).numpy().astype(bool),
        }
