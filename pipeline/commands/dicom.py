"""``python -m pipeline dicom``: query a PACS, retrieve the series, segment them and store each DICOM SEG back."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.overrides import (
    add_bundle_arguments,
    add_checkpoint_argument,
    add_folds_argument,
    add_strict_weights_argument,
    device_override,
    folds_override,
    parse_overrides,
    refuse_owned_overrides,
    strict_weights_override,
)
from pipeline.user_errors import UserError

if TYPE_CHECKING:
    from pipeline.dicom.pacs import PacsNode, SeriesInfo
    from pipeline.inference.predictor import BundlePredictor
    from pipeline.inference.slice_segmenter import SliceSegmenter

DEFAULT_CALLING_AET = "BRAINSEG"
# The modality the model segments; other series of a study (a SEG of an earlier run, say) are skipped.
SEGMENTED_MODALITY = "MR"
# Series of at least this many instances show their retrieval's progress.
LONG_SERIES = 40


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``dicom`` command."""
    parser = subparsers.add_parser(
        "dicom",
        help="query a PACS (DIMSE), retrieve MR series, segment them and store each DICOM SEG back",
        description="Find the series of a study, a series or a patient on a DICOM server (C-FIND), retrieve each "
        "MR series into OUTPUT/retrieved (C-GET), segment it slice by slice into a DICOM SEG in "
        "OUTPUT/segmentations and store the SEG back on the server (C-STORE). The server must know the calling "
        "AE title (for C-GET). The exit status is 1 when any series failed.",
    )
    parser.add_argument("--host", required=True, help="the DICOM server's host name or address")
    parser.add_argument("--port", type=int, required=True, help="the DICOM server's port")
    parser.add_argument("--called-aet", type=ae_title, required=True, help="the DICOM server's AE title")
    parser.add_argument(
        "--calling-aet",
        type=ae_title,
        default=DEFAULT_CALLING_AET,
        help="this client's AE title (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the server at each step (default: %(default)s)"
    )
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--study-uid", help="segment the MR series of this StudyInstanceUID")
    query.add_argument("--series-uid", help="segment this SeriesInstanceUID")
    query.add_argument("--patient-id", help="segment the MR series of every study of this PatientID")
    parser.add_argument("--output", type=Path, required=True, help="folder for the retrieved series and the SEGs")
    parser.add_argument("--no-store", action="store_true", help="don't store the SEGs back on the server")
    parser.add_argument("--nifti-copy", action="store_true", help="also write each series' mask as NIfTI")
    parser.add_argument("--overwrite", action="store_true", help="write into an OUTPUT folder that already holds files")
    add_folds_argument(parser)
    add_checkpoint_argument(parser)
    add_strict_weights_argument(parser)
    add_bundle_arguments(parser, example="--threshold 0.4")
    parser.set_defaults(accepts_overrides=True)
    return parser


def ae_title(value: str) -> str:
    """``value`` if it is a valid AE title (1 to 16 characters, not only spaces, no backslash or control character)."""
    if not value.strip() or len(value) > 16 or any(char == "\\" or not char.isprintable() for char in value):
        raise argparse.ArgumentTypeError(
            f"invalid AE title {value!r}: 1 to 16 characters, not only spaces, no backslash or control character"
        )
    return value


def run(args: argparse.Namespace) -> int:
    """Query, retrieve, segment and store; 1 when any series failed."""
    from pipeline.inference.predictor import BundlePredictor
    from pipeline.outputs.lock import output_folder_lock

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1 to 65535, got {args.port}")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    user_overrides = parse_overrides(args.overrides)
    refuse_owned_overrides(user_overrides, {"output_dir": "--output"})
    overrides = {
        **folds_override(args.folds),
        **strict_weights_override(args.strict_weights),
        **device_override(args.device),
        **user_overrides,
    }
    predictor = BundlePredictor(args.bundle, overrides)  # refuses a faulty override before the server is asked
    output = args.output.resolve()
    node, wanted = _query(args, output)
    with output_folder_lock(output):  # nothing is written before the lock is held, nor when nothing is found
        return _segment_and_store(args, predictor, node, wanted, output)


def _query(args: argparse.Namespace, output: Path) -> tuple[PacsNode, list[SeriesInfo]]:
    """The server and the MR series of the query; ``UserError`` when there are none, or ``output`` holds files."""
    from pipeline.dicom.pacs import PacsNode, echo, find_series
    from pipeline.outputs import one_line
    from pipeline.preflight import refuse_non_empty_folder

    if not args.overwrite:
        refuse_non_empty_folder(output, "the retrieved series and the SEGs")
    node = PacsNode(args.host, args.port, args.called_aet, args.calling_aet, args.timeout)
    echo(node)
    print(f"connected to {node} as {node.calling_aet}")
    found = find_series(node, study_uid=args.study_uid, series_uid=args.series_uid, patient_id=args.patient_id)
    print(f"found {len(found)} series in {len({series.study_uid for series in found})} studies")
    wanted = [series for series in found if series.modality == SEGMENTED_MODALITY]
    for series in found:
        if series.modality != SEGMENTED_MODALITY:
            print(f"skipped {series.label}: modality {one_line(series.modality) or 'unknown'}, the model segments MR")
    if not wanted:
        raise UserError(f"{node}: none of the {len(found)} series found is an MR series; nothing to segment")
    return node, wanted


def _segment_and_store(
    args: argparse.Namespace, predictor: BundlePredictor, node: PacsNode, wanted: list[SeriesInfo], output: Path
) -> int:
    """Retrieve, segment and store back the ``wanted`` series, inside the output folder's lock, keeping
    ``OUTPUT/inference_record.json`` up to date as each series ends."""
    from pipeline.atomic import OutputFolderFaultError
    from pipeline.inference.record import FAILED, FINISHED, PENDING, RUNNING, WRITTEN, InputOutcome
    from pipeline.inference.record import write_inference_record as write_record
    from pipeline.preflight import INFER_MIN_FREE_BYTES, check_output_folder, refuse_non_empty_folder

    if not args.overwrite:
        refuse_non_empty_folder(output, "the retrieved series and the SEGs")  # again: another run may have written
    check_output_folder(output, INFER_MIN_FREE_BYTES)
    print(f"loading the model of {args.bundle}", flush=True)
    segmenter = predictor.build().slice_segmenter
    outcomes = [InputOutcome(series.label, [], PENDING) for series in wanted]
    settings = {
        "command": "dicom",
        "server": str(node),
        "calling_aet": node.calling_aet,
        "query": {"study_uid": args.study_uid, "series_uid": args.series_uid, "patient_id": args.patient_id},
        "store": not args.no_store,
        "nifti_copy": args.nifti_copy,
        "overrides": parse_overrides(args.overrides),
        **folds_override(args.folds),
    }

    def save_record(state: str = RUNNING, error: str = "") -> None:
        write_record(output, args.bundle.resolve(), predictor.weights, settings, outcomes, state, error)

    save_record()
    failures: list[str] = []
    for number, (series, outcome) in enumerate(zip(wanted, outcomes), 1):
        step = f"[{number}/{len(wanted)}]"
        print(f"{step} {series.label}", flush=True)
        try:
            written, problems = _segment_series(node, series, output, segmenter, args, step)
        except OutputFolderFaultError as error:  # every later series would fail alike
            save_record(FAILED, str(error))
            raise
        except UserError as error:
            written, problems = [], [str(error)]
        outcome.outputs = [str(path) for path in written]
        outcome.status, outcome.reason = (FAILED, "; ".join(problems)) if problems else (WRITTEN, "")
        failures.extend(problems)
        if problems:
            print(f"{step} failed", file=sys.stderr)
        save_record()
    save_record(FINISHED)

    failed = sum(outcome.status == FAILED for outcome in outcomes)
    stored = "" if args.no_store else f" and stored on {node}"
    print(f"{len(wanted) - failed} of {len(wanted)} series segmented{stored}; outputs in {output}")
    if failures:
        print(f"error: {failed} of {len(wanted)} series failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _segment_series(
    node: PacsNode, series: SeriesInfo, output: Path, segmenter: SliceSegmenter, args: argparse.Namespace, step: str
) -> tuple[list[Path], list[str]]:
    """Retrieve, segment and (unless ``--no-store``) store back one series; the files written and its problems,
    one line each naming the series or its files."""
    from pipeline.dicom.pacs import get_series, store_files
    from pipeline.outputs import output_path, safe_name

    folder = output_path(output, "retrieved", safe_name(series.study_uid), safe_name(series.series_uid))
    shutil.rmtree(folder, ignore_errors=True)  # an earlier run's instances, which the server may no longer hold
    files = get_series(node, series, folder, progress=None if args.quiet else _progress_printer(step))
    print(f"{step} retrieved {len(files)} instances to {folder}; segmenting them", flush=True)
    written, problems = segment_retrieved(folder, output / "segmentations", segmenter, args, step)
    for path in written:
        print(f"{step} wrote {path}")
    segs = [path for path in written if path.suffix == ".dcm"]
    if not segs:
        return written, problems or [f"{series.label}: no SEG was written"]
    if not args.no_store:
        store_files(node, segs)
        print(f"{step} stored {len(segs)} SEG on {node}")
    return written, problems


def segment_retrieved(
    folder: Path, output_dir: Path, segmenter: SliceSegmenter, args: argparse.Namespace, step: str
) -> tuple[list[Path], list[str]]:
    """``segment_dicom_folder`` on a retrieved series, its slices' progress reported (``[1/3] segmenting: 40/155
    slices, ...``) unless ``--quiet``."""
    from pipeline.inference.scans import segment_dicom_folder
    from pipeline.progress import Progress

    with Progress(None, "slices", f"{step} segmenting", quiet=args.quiet) as progress:
        segmenter.on_slices = progress.advance_to
        try:
            return segment_dicom_folder(folder, output_dir, segmenter, nifti_copy=args.nifti_copy)
        finally:
            segmenter.on_slices = None


def _progress_printer(step: str) -> Callable[[int, int | None], None]:
    """A ``progress(received, expected)`` callback that prints at each quarter of a long series (each 100
    instances when the count is unknown), so a long retrieval shows it is moving."""
    printed: set[int] = set()

    def progress(received: int, expected: int | None) -> None:
        mark = 4 * received // expected if expected else received // 100
        long = expected is None or expected >= LONG_SERIES
        if long and mark > 0 and mark not in printed and received != expected:
            printed.add(mark)
            print(f"{step} retrieving, {received}{f'/{expected}' if expected else ''} instances", flush=True)

    return progress
