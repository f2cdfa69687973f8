"""Fetch free photographs from Debian packages as textures for the synthetic scene engine.

`fetch_textures(dest)` downloads each package of `PHOTO_PACKAGES` with `apt-get download` into
a temporary folder, unpacks it with `dpkg -x`, keeps the photographs (backgrounds) and the photo
cut-outs with alpha masks (foreground objects), and writes them to

    dest/backgrounds/<package>/<name>.jpg     (longer side at most `max_side`)
    dest/cutouts/<package>/<name>.png         (RGBA, cropped to the mask)
    dest/licenses/<package>.copyright         (the package's Debian copyright file)
    dest/LICENSES.md                          (what came from where, under which licences)

Packages that cannot be downloaded or unpacked are reported and skipped.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from taptr.errors import TaptrError
from taptr.io.atomic import atomic_path, write_text_atomic
from taptr.text import count

# Plasma wallpapers that are photographs (the others are renders / abstract art).
PLASMA_PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
)


@dataclass(frozen=True)
class PhotoPackage:
    """Which files of a Debian package to keep.

    Attributes:
        name: the Debian package.
        kind: "backgrounds" or "cutouts".
        patterns: fnmatch patterns of paths inside the unpacked package.
        exclude: fnmatch patterns of paths to skip (abstract art, clip art).
        largest_per_folder: keep only the largest image of each folder (wallpapers ship one
            file per screen resolution).
    """

    name: str
    kind: str
    patterns: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    largest_per_folder: bool = False


PHOTO_PACKAGES = (
    PhotoPackage(
        "lomiri-wallpapers-16.04",
        "backgrounds",
        ("usr/share/backgrounds/*.jpg",),
        exclude=("*umang_by_Abhishek_Mudgal*",),
    ),
    PhotoPackage("tuxpaint-data", "backgrounds", ("usr/share/tuxpaint/templates/*.jpg",)),
    PhotoPackage("palapeli-data", "backgrounds", ("usr/share/palapeli/collection/*.jpg",)),
    PhotoPackage("mate-backgrounds", "backgrounds", ("usr/share/backgrounds/mate/nature/*.jpg",)),
    PhotoPackage(
        "plasma-workspace-wallpapers",
        "backgrounds",
        tuple(f"usr/share/wallpapers/{name}/contents/images/*.jpg" for name in PLASMA_PHOTOS),
        largest_per_folder=True,
    ),
    PhotoPackage(
        "tuxpaint-stamps-default",
        "cutouts",
        ("usr/share/tuxpaint/stamps/*.png",),
        exclude=("*/cartoon/*", "*/symbols/*"),
    ),
)


@dataclass
class PackageResult:
    """What one package gave: the files written, or why it was skipped."""

    name: str
    version: str = ""
    kind: str = ""
    files: list[str] = field(default_factory=list)
    licences: list[str] = field(default_factory=list)
    error: str = ""


def _run(command: list[str], cwd: Path) -> None:
    """Run a command; raise RuntimeError with its last error line if it fails."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"{command[0]}: {error}") from error
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"{command[0]} exited with {result.returncode}")


def _download_and_unpack(package: str, work: Path) -> tuple[Path, str]:
    """`apt-get download` + `dpkg -x`; returns (unpacked root, package version)."""
    _run(["apt-get", "download", package], work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError("apt-get download produced no .deb file")
    version = subprocess.run(
        ["dpkg-deb", "-f", str(debs[-1]), "Version"], capture_output=True, text=True
    ).stdout.strip()
    root = work / "unpacked" / package
    root.mkdir(parents=True, exist_ok=True)
    _run(["dpkg", "-x", str(debs[-1]), str(root)], work)
    return root, version


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def select_files(root: Path, package: PhotoPackage) -> list[Path]:
    """The files of an unpacked package that `package` keeps, sorted."""
    chosen = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if (
            path.is_file()
            and _matches(relative, package.patterns)
            and not _matches(relative, package.exclude)
        ):
            chosen.append(path)
    if package.largest_per_folder:
        largest: dict[Path, Path] = {}
        for path in chosen:
            best = largest.get(path.parent)
            if best is None or path.stat().st_size > best.stat().st_size:
                largest[path.parent] = path
        chosen = sorted(largest.values())
    return chosen


def looks_like_photo_cutout(rgba: np.ndarray) -> bool:
    """Heuristic for photographic cut-outs (not clip art): a real alpha mask, at least 40 px,
    and many distinct colours in the opaque part (>= 800, and >= 15% of its pixels)."""
    alpha = rgba[..., 3]
    if min(alpha.shape) < 40 or float((alpha < 20).mean()) <= 0.02:
        return False
    opaque = rgba[..., :3][alpha > 200].astype(np.int64)
    if len(opaque) == 0:
        return False
    distinct = len(np.unique(opaque @ np.array([65536, 256, 1])))
    return distinct >= 800 and distinct >= 0.15 * len(opaque)


def _output_name(path: Path, root: Path, package: PhotoPackage) -> str:
    """A unique, readable file name (no suffix) for a kept image.

    Cut-outs: the path below `stamps/` ('animals/birds/x.png' -> 'animals_birds_x');
    one-image-per-folder wallpapers: the wallpaper's name; other images: their stem.
    """
    relative = path.relative_to(root).as_posix()
    if package.kind == "cutouts" and "stamps/" in relative:
        name = str(Path(relative.split("stamps/", 1)[1]).with_suffix(""))
    elif package.largest_per_folder:
        name = path.parents[2].name  # <wallpaper>/contents/images/<size>.jpg
    else:
        name = path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _save_background(source: Path, target: Path, max_side: int) -> None:
    with Image.open(source) as image:
        image.draft("RGB", (max_side, max_side))
        rgb = image.convert("RGB")
        if max(rgb.size) > max_side:
            scale = max_side / max(rgb.size)
            rgb = rgb.resize(
                (round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS
            )
        with atomic_path(target) as temporary:
            rgb.save(temporary, quality=92)


def _save_cutout(source: Path, target: Path) -> bool:
    """Save a photo cut-out cropped to its mask; False if it does not look like one."""
    with Image.open(source) as image:
        rgba = np.asarray(image.convert("RGBA"))
    if not looks_like_photo_cutout(rgba):
        return False
    rows = np.flatnonzero(rgba[..., 3].max(axis=1) > 0)
    columns = np.flatnonzero(rgba[..., 3].max(axis=0) > 0)
    cropped = rgba[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    with atomic_path(target) as temporary:
        Image.fromarray(cropped).save(temporary)
    return True


def _licences(copyright_file: Path) -> list[str]:
    """The distinct `License:` short names of a Debian copyright file."""
    if not copyright_file.is_file():
        return []
    names = re.findall(r"^License:\s*(\S.*)$", copyright_file.read_text(errors="replace"), re.M)
    return sorted(set(name.strip() for name in names))


def _extract(
    package: PhotoPackage, root: Path, dest: Path, max_side: int, result: PackageResult
) -> None:
    """Copy the kept images of an unpacked package to `dest` and record them in `result`."""
    target_folder = dest / package.kind / package.name
    target_folder.mkdir(parents=True, exist_ok=True)
    for source in select_files(root, package):
        name = _output_name(source, root, package)
        try:
            if package.kind == "cutouts":
                target = target_folder / f"{name}.png"
                if not _save_cutout(source, target):
                    continue
            else:
                target = target_folder / f"{name}.jpg"
                _save_background(source, target, max_side)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        result.files.append(target.relative_to(dest).as_posix())
    copyright_file = root / "usr/share/doc" / package.name / "copyright"
    if copyright_file.is_file():
        (dest / "licenses").mkdir(exist_ok=True)
        with atomic_path(dest / "licenses" / f"{package.name}.copyright") as temporary:
            shutil.copyfile(copyright_file, temporary)
    result.licences = _licences(copyright_file)


def write_licence_note(dest: Path, results: list[PackageResult]) -> Path:
    """Write dest/LICENSES.md: every package, its version, licences and files."""
    lines = [
        "# Texture sources",
        "",
        "Images extracted by `taptr textures fetch` from Debian packages (main archive).",
        "Each package's full Debian copyright file is in `licenses/<package>.copyright`;",
        "per-file authors and licences are listed there. Use these images for training and",
        "evaluation under those licences; do not redistribute them without their notices.",
        "",
    ]
    for result in results:
        lines.append(f"## {result.name}" + (f" ({result.version})" if result.version else ""))
        lines.append("")
        if result.error:
            lines += [f"Skipped: {result.error}", ""]
            continue
        lines.append(f"- kind: {result.kind}, {count(len(result.files), 'file')}")
        licences = ", ".join(result.licences) or "see the copyright file"
        lines.append(f"- licences (from the copyright file): {licences}")
        lines.append(f"- source: https://packages.debian.org/{result.name}")
        lines.append("")
        lines += [f"  - {name}" for name in result.files]
        lines.append("")
    return write_text_atomic(dest / "LICENSES.md", "\n".join(lines))


def fetch_textures(
    dest: str | Path,
    packages: tuple[PhotoPackage, ...] = PHOTO_PACKAGES,
    max_side: int = 1280,
    log: Callable[[str], None] = print,
) -> list[PackageResult]:
    """Download, unpack and extract every package of `packages` into `dest`.

    Returns one `PackageResult` per package (with `error` set for skipped ones).
    Raises TaptrError if `apt-get`/`dpkg` are missing.
    """
    for tool in ("apt-get", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise TaptrError(f"'{tool}' not found: texture fetching needs a Debian/Ubuntu system")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="taptr-textures-") as temporary:
        work = Path(temporary)
        for package in packages:
            result = PackageResult(name=package.name, kind=package.kind)
            try:
                root, result.version = _download_and_unpack(package.name, work)
                _extract(package, root, dest, max_side, result)
                log(f"{package.name}: {len(result.files)} {package.kind}")
            except RuntimeError as error:
                result.error = str(error)
                log(f"{package.name}: skipped ({error})")
            finally:  # keep the temporary folder small
                shutil.rmtree(work / "unpacked", ignore_errors=True)
                for deb in work.glob("*.deb"):
                    deb.unlink()
            results.append(result)
    write_licence_note(dest, results)
    return results
