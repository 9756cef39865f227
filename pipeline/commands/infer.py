"""``python -m pipeline infer``: segment slices, 3D volumes and DICOM series, one file or a folder (tree), and write
masks, overlays, SEGs and a record."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
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
from pipeline.user_errors import UserError, find_user_error

if TYPE_CHECKING:
    from pipeline.inference.record import InputOutcome

# The resolved config values an inference record keeps beside the command's own settings.
RECORDED_VALUES = ("device", "threshold", "image_size")
# While slices are being written, the record is rewritten at most this often (seconds): a folder of thousands of
# slices would otherwise rewrite a record of thousands of entries after each one.
RECORD_INTERVAL = 2.0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``infer`` command."""
    parser = subparsers.add_parser(
        "infer",
        help="segment 2D slices, 3D NIfTI volumes and DICOM series, one file or a folder (configs/inference.json)",
        description="Segment what INPUT holds with <bundle>/models/model.pt. 2D slices (.mat, .png, .nii, .nii.gz) "
        "get a mask (and an overlay) of their own size and orientation. 3D NIfTI volumes get a NIfTI mask with the "
        "volume's shape and affine, segmented slice by slice along the axis of largest voxel spacing. DICOM files "
        "(.dcm or any name) are grouped into series by SeriesInstanceUID, and each series gets a DICOM SEG "
        "referencing its instances. OUTPUT/inference_record.json lists the bundle version, the weights' SHA-256, "
        "the settings and every input with its outputs and status. Inputs that cannot be used are skipped and "
        "listed at the end with the reason, and the exit status is then 1.",
    )
    parser.add_argument(
        "--input", type=Path, required=True, help="a slice, volume or DICOM file, or a folder of them, to segment"
    )
    parser.add_argument("--output", type=Path, required=True, help="folder for the masks, overlays and SEGs")
    parser.add_argument(
        "--format",
        choices=["nii.gz", "png"],
        default="nii.gz",
        help="mask file format of 2D slices (volumes give .nii.gz, DICOM series a SEG; default: %(default)s)",
    )
    parser.add_argument(
        "--nifti-copy", action="store_true", help="also write each DICOM series' mask as NIfTI beside its SEG"
    )
    parser.add_argument(
        "--recursive", action="store_true", help="also segment the inputs of subfolders, mirroring them in OUTPUT"
    )
    parser.add_argument(
        "--no-tta", action="store_true", help="one pass per slice instead of averaging with a left-right flipped one"
    )
    parser.add_argument(
        "--no-overlays", action="store_true", help="don't write overlay PNGs (one per 2D slice, a sheet per series)"
    )
    parser.add_argument("--no-postprocessing", action="store_true", help="keep all components, don't fill holes")
    parser.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write each 2D slice's tumour probability (averaged over the models and flips, rounded to float16 "
        "precision; NIfTI has no float16 type, so stored as float32) as <name>_prob.nii.gz with the mask's geometry, "
        "for `ensemble`",
    )
    add_folds_argument(parser)
    add_strict_weights_argument(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--overwrite", action="store_true", help="write into an OUTPUT folder that already holds files")
    start.add_argument(
        "--continue",
        dest="skip_complete",
        action="store_true",
        help="skip the inputs whose outputs in OUTPUT are complete, e.g. after an interrupted run",
    )
    add_checkpoint_argument(parser)
    add_bundle_arguments(parser, example="--threshold 0.4 --slice_batch_size 4")
    parser.set_defaults(accepts_overrides=True, must_exist=("input",))
    return parser


def run(args: argparse.Namespace) -> int:
    """Segment the inputs and write the record; 1 when some inputs could not be used."""
    from pipeline.atomic import remove_stale_temporaries_below
    from pipeline.export.package import sha256_of
    from pipeline.handlers import InputFailuresError
    from pipeline.inference.discovery import find_inputs, nothing_to_segment, read_series
    from pipeline.inference.plan import (
        declared_shape,
        earlier_record,
        earlier_settings_differ,
        outputs_complete,
        planned_outcomes,
        refuse_output_holding_input,
        refuse_shared_outputs,
        vouched_outputs,
    )
    from pipeline.inference.predictor import BundlePredictor
    from pipeline.inference.record import (
        FAILED,
        FINISHED,
        PENDING,
        RECORD_NAME,
        RUNNING,
        SKIPPED,
        WRITTEN,
        InputOutcome,
        write_inference_record,
    )
    from pipeline.inference.scans import segment_scans
    from pipeline.outputs.lock import output_folder_lock
    from pipeline.preflight import INFER_MIN_FREE_BYTES, check_output_folder, refuse_non_empty_folder
    from pipeline.progress import Progress

    output, source = args.output.resolve(), args.input.absolute()
    refuse_output_holding_input(output, source)
    root = source if source.is_dir() else source.parent
    user_overrides = parse_overrides(args.overrides)
    refuse_owned_overrides(user_overrides, {"output_dir": "--output", "data_root_dir": "--input"})
    settings = {
        "output_dir": str(output),
        "data_root_dir": str(root),
        "output_ext": f".{args.format}",
        "flip_tta": not args.no_tta,
        "save_overlays": not args.no_overlays,
        "keep_largest_component": not args.no_postprocessing,
        "fill_holes": not args.no_postprocessing,
        "save_probabilities": args.save_probabilities,
        **folds_override(args.folds),
        **strict_weights_override(args.strict_weights),
        **device_override(args.device),
        **user_overrides,
    }
    predictor = BundlePredictor(args.bundle, settings)
    found = find_inputs(source, predictor.value("input_suffixes"), recursive=args.recursive, exclude=output)
    series, dicom_failures = read_series(source, found.dicom, recursive=args.recursive, exclude=output)
    if not (found.slices or found.volumes or series):
        reasons = [*found.left_out.values(), *dicom_failures, *found.notes.values()]
        raise UserError(nothing_to_segment(source, reasons, args.recursive))
    with output_folder_lock(output):
        if not (args.overwrite or args.skip_complete):
            refuse_non_empty_folder(output, "masks")
        remove_stale_temporaries_below(output)
        check_output_folder(output, INFER_MIN_FREE_BYTES)

        outcomes = planned_outcomes(found, series, predictor, args.nifti_copy)
        refuse_shared_outputs(outcomes)
        recorded = {
            "input": str(source),
            "recursive": args.recursive,
            "continue": args.skip_complete,
            "nifti_copy": args.nifti_copy,
            **{key: str(predictor.value(key)) if key == "device" else predictor.value(key) for key in RECORDED_VALUES},
            **{key: value for key, value in settings.items() if key != "device"},
            "overrides": user_overrides,
        }
        vouched: set[str] = set()
        if args.skip_complete:
            earlier = earlier_record(output)
            weights_sha256 = sha256_of(predictor.weights_path) if predictor.weights_path.is_file() else None
            if difference := earlier_settings_differ(earlier, recorded, weights_sha256):
                raise UserError(
                    f"{output}: --continue would keep outputs made otherwise: {difference}; write into a new folder, "
                    "or pass --overwrite"
                )
            vouched = vouched_outputs(earlier)
        done = {
            key
            for key, outcome in outcomes.items()
            if set(outcome.outputs) <= vouched
            and outputs_complete(outcome.outputs, None if isinstance(key, str) else declared_shape(key))
        }
        for key, outcome in outcomes.items():
            outcome.status = SKIPPED if key in done else PENDING
            outcome.reason = "its outputs were already complete" if key in done else ""
        to_segment = [path for path in found.slices if path not in done]
        volumes = [path for path in found.volumes if path not in done]
        series = [item for item in series if item.series_uid not in done]
        unusable = [InputOutcome(str(path), [], FAILED, line) for path, line in found.left_out.items()]
        unusable += [InputOutcome(line.split(": ", 1)[0], [], FAILED, line) for line in dicom_failures]
        unusable += [InputOutcome(str(path), [], SKIPPED, line) for path, line in found.notes.items()]

        # Built, and its weights checked, before any output is written: a bundle or weights fault stops the run
        # with nothing half done.
        predictor.build(to_segment)

        last_saved = [0.0]

        def save_record(state: str = RUNNING, soon: bool = False, error: str = "") -> Path:
            """Rewrite the record; with ``soon``, only when the last rewrite is RECORD_INTERVAL seconds old."""
            path = output / RECORD_NAME
            if soon and time.monotonic() - last_saved[0] < RECORD_INTERVAL:
                return path
            everything = [*outcomes.values(), *unusable]
            weights = predictor.weights
            write_inference_record(output, args.bundle.resolve(), weights, recorded, everything, state, error)
            last_saved[0] = time.monotonic()
            return path

        slices_done = Progress(len(to_segment), "slices", "segmenting", quiet=args.quiet)
        scans_done = Progress(len(volumes) + len(series), "scans", "segmenting", quiet=args.quiet)

        def slices_written(files: list[str]) -> None:
            for file in files:
                outcomes[Path(file)].status = WRITTEN
            save_record(soon=True)
            slices_done.advance(len(files))

        def scan_ended() -> None:
            save_record()
            scans_done.advance()

        save_record()
        unread = None
        try:
            if to_segment:
                with slices_done:
                    try:
                        predictor.segment_slice_files(on_each=slices_written)
                    except Exception as error:
                        unread = find_user_error(error)
                        if not isinstance(unread, InputFailuresError):
                            raise
                mark_slices(to_segment, outcomes, unread.failures if unread else [])
                save_record()
            with scans_done:
                segment_scans(volumes, series, outcomes, predictor.slice_segmenter, on_each=scan_ended)
        except Exception as error:  # what stops the run (a full disk) is its record's last word
            fault = find_user_error(error)
            save_record(FAILED, error=str(fault) if fault else f"{type(error).__name__}: {error}")
            if fault is not None:
                raise fault from None
            raise

        record = save_record(FINISHED)
        not_segmented = [outcome.reason for outcome in [*outcomes.values(), *unusable] if outcome.status == FAILED]
        not_segmented = [line for line in not_segmented if not (unread and line in unread.failures)]
        _report_not_segmented(not_segmented)
        _report_notes([outcome for outcome in outcomes.values() if outcome.note and outcome.status == WRITTEN])
        if unread is not None:
            raise unread
        counts = _summary(len(to_segment), len(volumes), len(series), len(done))
        print(f"outputs: {args.output} ({counts})")
        print(f"record: {record}")
        return 1 if not_segmented else 0


def mark_slices(slices: Sequence[Path], outcomes: dict[Path | str, InputOutcome], failures: Sequence[str]) -> None:
    """Mark the outcomes of the segmented ``slices`` written, or failed with their line of ``failures``."""
    from pipeline.inference.record import FAILED, WRITTEN

    for path in slices:
        outcomes[path].status = WRITTEN
    for line in failures:
        # A failure line starts with its input's path; the longest match tells "a.png" from "a.png.png".
        failed = max((path for path in slices if line.startswith(str(path))), key=lambda path: len(str(path)))
        outcomes[failed].status, outcomes[failed].reason = FAILED, line


def _summary(slices: int, volumes: int, series: int, skipped: int) -> str:
    counts = ((slices, "slices"), (volumes, "volumes"), (series, "DICOM series"), (skipped, "already done"))
    return ", ".join(f"{count} {what}" for count, what in counts if count)


def _report_notes(outcomes: Sequence[InputOutcome]) -> None:
    if outcomes:
        first = outcomes[0]
        print(f"note: {len(outcomes)} inputs were read otherwise than stored, e.g. {first.input}: {first.note}")


def _report_not_segmented(lines: Sequence[str]) -> None:
    if lines:
        print(f"error: {len(lines)} inputs were not segmented:", *lines, sep="\n  ", file=sys.stderr)
