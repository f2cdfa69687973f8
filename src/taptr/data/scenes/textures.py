"""Photo textures for the synthetic scene engine: background images and alpha cut-outs.

`TextureLibrary.load(root)` reads a folder of images recursively (jpg, jpeg, png, webp, bmp,
tif). Images whose alpha channel really cuts something out (some transparent and some opaque
pixels) become foreground cut-outs with their own mask; every other image is a background /
fill texture. A folder laid out by `taptr textures fetch` (`root/backgrounds`, `root/cutouts`)
is read with that split instead.

Held-out evaluation sets must use textures never seen in training: every file is assigned to
"train" or "heldout" by a hash of its file name (`texture_split`), stable across machines and
independent of where the folder lives.

An empty library (`TextureLibrary.empty()`) makes the engine fall back to procedural textures.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from taptr.errors import TaptrError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "heldout", "all")


def texture_split(file_name: str, heldout_fraction: float = 0.1) -> str:
    """ "train" or "heldout" for an image, from a hash of its base name (case-insensitive)."""
    digest = hashlib.sha256(Path(file_name).name.lower().encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:4], "big") / 2**32
    return "heldout" if bucket < heldout_fraction else "train"


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under `root`, recursively, in a sorted (deterministic) order."""
    root = Path(root)
    found = [
        path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(found, key=lambda path: str(path.relative_to(root)))


def _has_real_alpha(alpha: np.ndarray) -> bool:
    """True if an alpha channel has a few % transparent pixels and a few % opaque ones."""
    transparent = float((alpha < 32).mean())
    opaque = float((alpha > 224).mean())
    return transparent > 0.02 and opaque > 0.05


def _alpha_bounding_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels with alpha > 0, bottom/right exclusive."""
    rows = np.flatnonzero(alpha.max(axis=1) > 0)
    cols = np.flatnonzero(alpha.max(axis=0) > 0)
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """`image` scaled down (never up) so that its longer side is at most `max_side`."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(new_size, Image.Resampling.LANCZOS)


def read_background(path: Path, max_side: int) -> torch.Tensor:
    """A background image as uint8 `[3, h, w]`, longer side at most `max_side`."""
    with Image.open(path) as image:
        image.draft("RGB", (max_side, max_side))  # fast JPEG downscale while decoding
        rgb = _shrink(image.convert("RGB"), max_side)
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


def read_cutout(path: Path, max_side: int) -> torch.Tensor | None:
    """A cut-out as uint8 `[4, h, w]` RGBA cropped to its alpha box, or None if not one."""
    with Image.open(path) as image:
        if "A" not in image.getbands() and "transparency" not in image.info:
            return None
        rgba = np.asarray(image.convert("RGBA"))
    if not _has_real_alpha(rgba[..., 3]):
        return None
    top, bottom, left, right = _alpha_bounding_box(rgba[..., 3])
    cropped = Image.fromarray(rgba[top:bottom, left:right])
    cropped = _shrink(cropped, max_side)
    return torch.from_numpy(np.asarray(cropped).copy()).permute(2, 0, 1).contiguous()


@dataclass
class TextureLibrary:
    """Background images and foreground cut-outs, as uint8 tensors on one device.

    Attributes:
        backgrounds: list of uint8 `[3, h, w]` RGB images (any sizes).
        cutouts: list of uint8 `[4, h, w]` RGBA cut-outs (straight alpha), cropped to the mask.
        background_names, cutout_names: file names, for reports and licences.
    """

    backgrounds: list[torch.Tensor] = field(default_factory=list)
    cutouts: list[torch.Tensor] = field(default_factory=list)
    background_names: list[str] = field(default_factory=list)
    cutout_names: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls) -> "TextureLibrary":
        """No photos: the engine uses procedural textures and random shapes only."""
        return cls()

    @property
    def is_empty(self) -> bool:
        return not self.backgrounds and not self.cutouts

    def __len__(self) -> int:
        return len(self.backgrounds) + len(self.cutouts)

    def to(self, device: torch.device | str) -> "TextureLibrary":
        """The same library with every image on `device` (e.g. once, before GPU rendering)."""
        return TextureLibrary(
            backgrounds=[image.to(device) for image in self.backgrounds],
            cutouts=[image.to(device) for image in self.cutouts],
            background_names=list(self.background_names),
            cutout_names=list(self.cutout_names),
        )

    @classmethod
    def load(
        cls,
        root: str | os.PathLike,
        split: str = "train",
        background_max_side: int = 768,
        cutout_max_side: int = 320,
        heldout_fraction: float = 0.1,
    ) -> "TextureLibrary":
        """Read every image under `root` (recursively) that belongs to `split`.

        split: "train", "heldout" (files whose name hashes into the held-out bucket) or "all".
        Images are downscaled at load to the given longer sides to bound memory.
        Raises TaptrError if `root` does not exist or holds no usable image.
        """
        if split not in SPLITS:
            raise TaptrError(f"texture split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        if not root.is_dir():
            raise TaptrError(f"texture folder not found: {root}")
        library = cls()
        fetched_layout = (root / "backgrounds").is_dir() or (root / "cutouts").is_dir()
        for path in list_images(root):
            if split != "all" and texture_split(path.name, heldout_fraction) != split:
                continue
            relative = path.relative_to(root)
            try:
                library._add(path, relative, fetched_layout, background_max_side, cutout_max_side)
            except (OSError, ValueError, Image.DecompressionBombError):
                continue  # unreadable or truncated file: skip it
        if library.is_empty:
            raise TaptrError(f"no usable {split} images under {root}")
        return library

    def _add(self, path, relative, fetched_layout, background_max_side, cutout_max_side) -> None:
        """Read one file into the library as a cut-out or a background."""
        top_folder = relative.parts[0] if len(relative.parts) > 1 else ""
        wants_cutout = top_folder == "cutouts" if fetched_layout else True
        if wants_cutout:
            cutout = read_cutout(path, cutout_max_side)
            if cutout is not None:
                self.cutouts.append(cutout)
                self.cutout_names.append(str(relative))
                return
            if fetched_layout:
                return
        if fetched_layout and top_folder != "backgrounds":
            return
        self.backgrounds.append(read_background(path, background_max_side))
        self.background_names.append(str(relative))
