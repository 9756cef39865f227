"""``python -m pipeline infer``: segment a folder of slices and write masks (and overlays)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.checkpoints import (
    CheckpointMismatchError,
    MissingCheckpointError,
    ModelConfigMismatchError,
    UnsafeCheckpointError,
)
from pipeline.handlers import InputFailuresError
from pipeline.preflight import (
    INFER_MIN_FREE_BYTES,
    PreflightError,
    bundle_config_values,
    check_output_folder,
    refuse_non_empty_folder,
)
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
        help="segment .mat/.png/.nii(.gz) slices, one file or a folder (configs/inference.json)",
        description="Segment every .mat, .png, .nii and .nii.gz slice in INPUT with <bundle>/models/model.pt; "
        "masks keep each input's size and orientation. Files that cannot be read are skipped and listed at "
        "the end, and the exit status is then 1.",
    )
    parser.add_argument("--input", type=Path, required=True, help="a slice, or a folder of slices, to segment")
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
    suffixes = bundle_config_values(args.bundle, ["inference.json"], ("input_suffixes",), {})["input_suffixes"]
    try:
        slices, left_out = input_slices(args.input, suffixes)
        if not args.overwrite:
            refuse_non_empty_folder(args.output, "masks")
        check_output_folder(args.output, INFER_MIN_FREE_BYTES)
        run_bundle(
            args.bundle,
            ["inference.json"],
            "infer",
            datalist=[{"image": str(path)} for path in slices],
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
        _report_left_out(left_out if isinstance(user_error, InputFailuresError) else [])
        return 1
    print(f"masks: {args.output} ({len(slices)} slices)")
    _report_left_out(left_out)
    return 1 if left_out else 0


def _report_left_out(left_out: Sequence[str]) -> None:
    if left_out:
        print(f"error: {len(left_out)} files were not segmented:", *left_out, sep="\n  ", file=sys.stderr)


def input_slices(path: Path, suffixes: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The slices to segment at ``path`` (one file, or the files of a folder), and one line per file left out.

    Raises ``PreflightError`` when ``path`` does not exist or holds no slice of a supported type.
    """
    if not path.exists():
        raise PreflightError(f"{path}: no such file or folder")
    files = [path] if path.is_file() else sorted(entry for entry in path.iterdir() if entry.is_file())
    slices = [file for file in files if file.name.lower().endswith(tuple(suffixes))]
    left_out = [
        f"{file}: unsupported type; infer reads {', '.join(suffixes)}"
        + (" (DICOM is not read yet: convert the series to NIfTI)" if file.suffix.lower() == ".dcm" else "")
        for file in files
        if file not in slices
    ]
    if not slices:
        found = f"{len(files)} files of other types" if files else "nothing"
        raise PreflightError(f"{path}: no slice to segment ({found}); infer reads {', '.join(suffixes)}")
    return slices, left_out
