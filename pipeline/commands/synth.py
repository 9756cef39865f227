"""``python -m pipeline synth``: write a phantom dataset in the figshare MAT-file layout, or as DICOM MR series."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from pipeline.data.sources import CVIND_NAME
from pipeline.data.tumor_types import TUMOR_TYPES
from pipeline.phantoms.defaults import DEFAULT_PATIENTS, DEFAULT_SIZE, DEFAULT_SLICES_PER_PATIENT, FOLDS, MIN_SIZE
from pipeline.user_errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``synth`` command."""
    parser = subparsers.add_parser(
        "synth",
        help="write phantom slices (N.mat + cvind.mat) in the figshare layout, or DICOM MR series",
        description="Write phantom T1-contrast head slices with one tumour per patient as figshare MATLAB v7.3 "
        f"files 1.mat ... N.mat, and {CVIND_NAME} with a patient-wise {FOLDS}-fold split stratified by tumour type; "
        "or, with --format dicom, the same slices as one DICOM MR series per patient "
        "(<out>/<PatientID>/<SeriesNumber>/<InstanceNumber>.dcm) with patient, study and geometry headers.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder to write: new, or without .mat files (dicom: without .dcm files)",
    )
    parser.add_argument(
        "--format",
        choices=("mat", "dicom"),
        default="mat",
        help="mat: the figshare layout; dicom: one MR series per patient (default: %(default)s)",
    )
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS, help="patients (default: %(default)s)")
    parser.add_argument(
        "--slices", type=int, default=DEFAULT_SLICES_PER_PATIENT, help="slices per patient (default: %(default)s)"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help=f"slice width and height in pixels, at least {MIN_SIZE} (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same pixels (default: %(default)s)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the phantom dataset and print a one-line summary."""
    from pipeline.outputs import output_folder_lock
    from pipeline.preflight import check_output_folder

    for flag, value, least in (
        ("--patients", args.patients, 1),
        ("--slices", args.slices, 1),
        ("--size", args.size, MIN_SIZE),
    ):
        if value < least:
            raise UserError(f"{flag} must be at least {least}, got {value}")
    check_output_folder(args.out, 0)
    with output_folder_lock(args.out):
        return _write(args)


def _write(args: argparse.Namespace) -> int:
    from pipeline.phantoms.slices import phantom_cohort, synthesize_dataset

    counts = Counter(patient.tumor_type for patient in phantom_cohort(args.patients, args.seed))
    per_type = ", ".join(f"{counts[code]} {name}" for code, name in TUMOR_TYPES.items())
    if args.format == "dicom":
        from pipeline.phantoms.dicom_series import write_phantom_series

        paths = write_phantom_series(args.out, args.patients, args.slices, args.size, args.seed)
        print(
            f"wrote {len(paths)} DICOM MR slices in {args.patients} series, one per patient ({per_type}), "
            f"{args.size}x{args.size}, seed {args.seed}, to {args.out}"
        )
        return 0
    paths = synthesize_dataset(args.out, args.patients, args.slices, args.size, args.seed)
    print(
        f"wrote {len(paths)} slices of {args.patients} patients ({per_type}), {args.size}x{args.size}, "
        f"seed {args.seed}, and {CVIND_NAME} ({FOLDS} folds) to {args.out}"
    )
    return 0
