"""Dense optical flow with OpenCV's DIS (Kroeger et al., ECCV 2016), shared by the `dis`
baseline (`taptr.evaluation.baselines`) and our flow prior (`taptr.models.additions.flow_prior`).
OpenCV is imported only when a flow is made or sampled."""

from __future__ import annotations

import numpy as np

DIS_PRESETS = ("ultrafast", "fast", "medium")


def create_dis(preset: str):
    """An OpenCV `DISOpticalFlow` of a preset of `DIS_PRESETS`. Raises ValueError for another."""
    import cv2

    codes = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
             "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
             "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    if preset not in codes:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {DIS_PRESETS}")
    return cv2.DISOpticalFlow_create(codes[preset])


def sample_flow(flow: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear sample of a dense flow [H, W, 2] at points [M, 2] (x, y pixels) -> [M, 2].

    Points off the image take the flow of the nearest border pixel.
    """
    import cv2

    map_x = np.ascontiguousarray(points[:, 0:1], dtype=np.float32)
    map_y = np.ascontiguousarray(points[:, 1:2], dtype=np.float32)
    sampled = cv2.remap(flow, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(-1, 2)
