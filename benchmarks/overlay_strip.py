"""Make a strip of overlay frames (a picture for the docs) from tracking a clip.

    python benchmarks/overlay_strip.py ../shared/videos/bear.mp4 docs/images/bear_strip.jpg \
        --frames 48 --grid 12 --panels 4

Tracks a grid on frame 0 of the first `--frames` frames with the bundled model and writes
`--panels` evenly spaced overlay frames side by side (trails of 8 frames, occluded points as
hollow rings). The clip itself is not stored anywhere, only the picture.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

from taptr.io.atomic import atomic_path
from taptr.io.video import open_video
from taptr.tracker import Tracker
from taptr.viz import draw_tracks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("output")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--grid", type=int, default=12)
    parser.add_argument("--panels", type=int, default=4)
    parser.add_argument("--height", type=int, default=240, help="panel height in the strip")
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()

    source = open_video(args.video)
    frames = source.read_frames(0, min(args.frames, source.num_frames))
    result = Tracker.from_pretrained(args.weights).track(frames, grid=args.grid)
    overlays = list(draw_tracks(frames, result, trail=8))
    chosen = np.linspace(0, len(overlays) - 1, args.panels).round().astype(int)
    panels = []
    for index in chosen:
        image = Image.fromarray(overlays[index])
        width = round(image.width * args.height / image.height)
        panels.append(np.asarray(image.resize((width, args.height), Image.BILINEAR)))
    with atomic_path(args.output) as temporary:
        Image.fromarray(np.concatenate(panels, axis=1)).save(temporary, quality=88)
    print(f"wrote {args.output}: frames {chosen.tolist()} of {len(overlays)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
