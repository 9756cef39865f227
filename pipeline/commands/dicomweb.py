"""``python -m pipeline dicomweb``: find series on a DICOMweb server (QIDO-RS), retrieve them (WADO-RS), segment
them and store each DICOM SEG back (STOW-RS)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.commands.dicom import SEGMENTED_MODALITY
from pipeline.overrides import (
    add_bundle_arguments,
    add_checkpoint_argument,
    add_folds_argument,
    device_override,
    folds_override,
    parse_overrides,
    refuse_owned_overrides,
)
from pipeline.user_errors import UserError

if TYPE_CHECKING:
    from pipeline.dicom.dicomweb import DicomwebServer
    from pipeline.dicom.pacs import SeriesInfo
    from pipeline.inference.slice_segmenter import SliceSegmenter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``dicomweb`` command."""
    parser = subparsers.add_parser(
        "dicomweb",
        help="find MR series on a DICOMweb server (QIDO-RS), retrieve (WADO-RS), segment, store each SEG (STOW-RS)",
        description="The same round trip as `dicom`, over DICOMweb: find the series of a study, a series or a "
        "patient (QIDO-RS), retrieve each MR series into OUTPUT/retrieved (WADO-RS), segment it into a DICOM SEG in "
        "OUTPUT/segmentations and store the SEG on the server (STOW-RS). Credentials are read from --auth-file or "
        "the environment variable PIPELINE_DICOMWEB_AUTH, never from the command line: USER:PASSWORD for HTTP "
        "basic, or 'Bearer TOKEN'. The exit status is 1 when any series failed.",
    )
    parser.add_argument("--url", required=True, help="the DICOMweb service root, e.g. https://pacs/dicom-web")
    parser.add_argument(
        "--auth-file",
        type=Path,
        help="a file (mode 600) holding USER:PASSWORD or 'Bearer TOKEN' (default: $PIPELINE_DICOMWEB_AUTH, if set)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for each answer (default: %(default)s)"
    )
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--study-uid", help="segment the MR series of this StudyInstanceUID")
    query.add_argument("--series-uid", help="segment this SeriesInstanceUID")
    query.add_argument("--patient-id", help="segment the MR series of every study of this PatientID")
    parser.add_argument("--output", type=Path, required=True, help="folder for the retrieved series and the SEGs")
    parser.add_argument("--no-store", action="store_true", help="don't store the SEGs on the server")
    parser.add_argument("--nifti-copy", action="store_true", help="also write each series' mask as NIfTI")
    parser.add_argument("--overwrite", action="store_true", help="write into an OUTPUT folder that already holds files")
    add_folds_argument(parser)
    add_checkpoint_argument(parser)
    add_bundle_arguments(parser, example="--threshold 0.4")
    parser.set_defaults(accepts_overrides=True, must_exist=("auth_file",))
    return parser


def run(args: argparse.Namespace) -> int:
    """Find, retrieve, segment and store; 1 when any series failed."""
    from pipeline.dicom.dicomweb import connect, find_series, read_credentials
    from pipeline.inference.predictor import BundlePredictor
    from pipeline.outputs import one_line
    from pipeline.outputs.lock import output_folder_lock
    from pipeline.preflight import INFER_MIN_FREE_BYTES, check_output_folder, refuse_non_empty_folder

    if not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    for name in ("dicomweb_client", "highdicom"):  # one line per step is printed here; theirs only from warnings up
        logging.getLogger(name).setLevel(logging.WARNING)
    user_overrides = parse_overrides(args.overrides)
    refuse_owned_overrides(user_overrides, {"output_dir": "--output"})
    overrides = {**folds_override(args.folds), **device_override(args.device), **user_overrides}
    predictor = BundlePredictor(args.bundle, overrides)  # refuses a faulty override before the server is asked
    output = args.output.resolve()
    if not args.overwrite:
        refuse_non_empty_folder(output, "the retrieved series and the SEGs")
    server = connect(args.url, read_credentials(args.auth_file), args.timeout)
    found = find_series(server, study_uid=args.study_uid, series_uid=args.series_uid, patient_id=args.patient_id)
    print(f"found {len(found)} series in {len({series.study_uid for series in found})} studies at {server}")
    wanted = [series for series in found if series.modality == SEGMENTED_MODALITY]
    for series in found:
        if series.modality != SEGMENTED_MODALITY:
            print(f"skipped {series.label}: modality {one_line(series.modality) or 'unknown'}, the model segments MR")
    if not wanted:
        raise UserError(f"{server}: none of the {len(found)} series found is an MR series; nothing to segment")
    with output_folder_lock(output):
        if not args.overwrite:
            refuse_non_empty_folder(output, "the retrieved series and the SEGs")
        check_output_folder(output, INFER_MIN_FREE_BYTES)
        print(f"loading the model of {args.bundle}", flush=True)
        segmenter = predictor.build().slice_segmenter
        failures: list[str] = []
        for number, series in enumerate(wanted, 1):
            step = f"[{number}/{len(wanted)}]"
            print(f"{step} {series.label}", flush=True)
            try:
                problems = _segment_series(server, series, output, segmenter, args, step)
            except UserError as error:
                problems = [str(error)]
            if problems:
                failures.append("; ".join(problems))
                print(f"{step} failed", file=sys.stderr)
    stored = "" if args.no_store else f" and stored on {server}"
    print(f"{len(wanted) - len(failures)} of {len(wanted)} series segmented{stored}; outputs in {output}")
    if failures:
        print(f"error: {len(failures)} of {len(wanted)} series failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _segment_series(
    server: DicomwebServer,
    series: SeriesInfo,
    output: Path,
    segmenter: SliceSegmenter,
    args: argparse.Namespace,
    step: str,
) -> list[str]:
    """Retrieve, segment and (unless ``--no-store``) store one series; its problems, one line each."""
    import shutil

    from pipeline.commands.dicom import segment_retrieved
    from pipeline.dicom.dicomweb import retrieve_series, store_files
    from pipeline.outputs import output_path, safe_name

    folder = output_path(output, "retrieved", safe_name(series.study_uid), safe_name(series.series_uid))
    shutil.rmtree(folder, ignore_errors=True)  # an earlier run's instances, which the server may no longer hold
    files = retrieve_series(server, series, folder)
    print(f"{step} retrieved {len(files)} instances to {folder}; segmenting them", flush=True)
    written, problems = segment_retrieved(folder, output / "segmentations", segmenter, args, step)
    for path in written:
        print(f"{step} wrote {path}")
    segs = [path for path in written if path.suffix == ".dcm"]
    if not segs:
        return problems or [f"{series.label}: no SEG was written"]
    if not args.no_store:
        store_files(server, segs)
        print(f"{step} stored {len(segs)} SEG on {server}")
    return problems
