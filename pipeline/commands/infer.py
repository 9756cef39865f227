"""``python -m pipeline infer``: segment a folder of slices and write masks (and overlays)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.checkpoints import (
    CheckpointMismatchError,
    MissingCheckpointError,
    ModelConfigMismatchError,
    UnsafeCheckpointError,
)
from pipeline.handlers import InputFailuresError
from pipeline.preflight import INFER_MIN_FREE_BYTES, PreflightError, check_output_folder, refuse_non_empty_folder
from pipeline.user_errors import find_user_error
from pipeline.workflow import add_bundle_arguments, device_override, parse_overrides, run_bundle

USER_ERRORS = (
    PreflightError,
    UnsafeCheckpointError,
    CheckpointMismatchError,
    MissingCheckpointError,
    ModelConfigMismatchError,
    InputFailuresError,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``infer`` command."""
    parser = subparsers.add_parser(
        "infer",
        help="segment a folder of .mat/.png/.nii(.gz) slices (configs/inference.json)",
        description="Segment every .mat, .png, .nii and .nii.gz slice in INPUT with <bundle>/models/model.pt; "
        "masks keep each input's size and orientation. Files that cannot be read are skipped and listed at "
        "the end, and the exit status is then 1.",
    )
    parser.add_argument("--input", type=Path, required=True, help="folder of slices to segment")
    parser.add_argument("--output", type=Path, required=True, help="folder for the masks and overlays")
    parser.add_argument("--format", choices=["nii.gz", "png"], default="nii.gz", help="mask file format")
    parser.add_argument("--tta", action="store_true", help="average with a left-right flipped pass")
    parser.add_argument("--no-overlays", action="store_true", help="don't write overlay PNGs")
    parser.add_argument("--no-postprocessing", action="store_true", help="keep all components, don't fill holes")
    parser.add_argument("--overwrite", action="store_true", help="write into an OUTPUT folder that already holds files")
    add_bundle_arguments(parser)
    parser.set_defaults(accepts_overrides=True)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the inference workflow; 1 when some inputs could not be read or on another fault the user can act on."""
    if not args.input.is_dir():
        raise SystemExit(f"error: {args.input}: not a folder of slices")
    try:
        if not args.overwrite:
            refuse_non_empty_folder(args.output, "masks")
        check_output_folder(args.output, INFER_MIN_FREE_BYTES)
        run_bundle(
            args.bundle,
            ["inference.json"],
            "infer",
            dataset_dir=str(args.input.resolve()),
            output_dir=str(args.output.resolve()),
            output_ext=f".{args.format}",
            flip_tta=args.tta,
            save_overlays=not args.no_overlays,
            keep_largest_component=not args.no_postprocessing,
            fill_holes=not args.no_postprocessing,
            **device_override(args.device),
            **parse_overrides(args.overrides),
        )
    except Exception as error:
        user_error = find_user_error(error, USER_ERRORS)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        return 1
    print(f"masks: {args.output}")
    return 0
