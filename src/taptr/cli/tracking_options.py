"""The tracking-option flags shared by `taptr track`, `taptr eval` and `taptr app`: one flag to
turn each of our additions off, and `--option KEY=VALUE` for any `TrackingOptions` field."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "tracking options (ours; defaults stored with the weights; all four --no-* flags "
        "give the paper's TAPTRv2 stream)")
    group.add_argument("--no-flow-prior", action="store_true",
                       help="turn our optical-flow prior off (new frames start from a copy of "
                            "the last position, as in the paper)")
    group.add_argument("--no-correlation", action="store_true",
                       help="turn our local correlation update off (and its template refresh)")
    group.add_argument("--no-template-update", action="store_true",
                       help="turn our template refresh off (keep the query frame's templates)")
    group.add_argument("--no-motion-correction", action="store_true",
                       help="turn our neighbour motion correction off")
    group.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="set a tracking option, e.g. flow_prior=on, template_update=0.5, "
                            "motion_correction_px=8, motion_correction_neighbours=6, "
                            "long_video_padding=on, kernels=reference (repeatable)")


def option_changes(args) -> dict | None:
    """The changes to the weights' default options that the flags ask for (None: none).
    Raises `TaptrError` for an unknown key or a bad value."""
    from taptr.models.options import TrackingOptions

    parsed = TrackingOptions().with_overrides(args.option)
    changes = {item.partition("=")[0].strip().replace("-", "_"): None for item in args.option}
    changes = {key: getattr(parsed, key) for key in changes}
    if args.no_flow_prior:
        changes["flow_prior"] = False
    if args.no_correlation:
        changes["correlation"] = False
    if args.no_template_update:
        changes["template_update"] = 0.0
    if args.no_motion_correction:
        changes["motion_correction_px"] = 0.0
    return changes or None
