"""``python -m pipeline infer``: segment slices, 3D volumes and DICOM series, one file or a folder (tree), and write
masks, overlays, SEGs and a record."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.overrides import (
    add_bundle_arguments,
    add_folds_argument,
    device_override,
    folds_override,
    parse_overrides,
)
from pipeline.user_errors import UserError, find_user_error

if TYPE_CHECKING:
    from pipeline.dicom.series import DicomSeries
    from pipeline.reports.inference_record import InputOutcome
    from pipeline.volumes import SliceSegmenter

# The resolved config values an inference record keeps beside the command's own settings.
RECORDED_VALUES = ("device", "threshold", "image_size")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# The settings that change what a mask holds: --continue keeps earlier outputs only where they all agree.
MASK_SETTINGS = ("threshold", "image_size", "flip_tta", "keep_largest_component", "fill_holes", "folds", "output_ext")
# The names SaveImaged gives outputs in configs/inference.json (its output_postfix).
MASK_POSTFIX, PROBABILITY_POSTFIX = "seg", "prob"


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
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--overwrite", action="store_true", help="write into an OUTPUT folder that already holds files")
    start.add_argument(
        "--continue",
        dest="skip_complete",
        action="store_true",
        help="skip the inputs whose outputs in OUTPUT are complete, e.g. after an interrupted run",
    )
    add_bundle_arguments(parser)
    parser.set_defaults(accepts_overrides=True)
    return parser


@dataclass
class Inputs:
    """What ``infer`` found at its input path, by kind, the files it leaves out (unusable, each with the reason),
    and the files it skips on purpose (``notes``, e.g. the figshare fold file: not a failure)."""

    slices: list[Path] = field(default_factory=list)
    volumes: list[Path] = field(default_factory=list)
    dicom: list[Path] = field(default_factory=list)
    left_out: dict[Path, str] = field(default_factory=dict)
    notes: dict[Path, str] = field(default_factory=dict)


def run(args: argparse.Namespace) -> int:
    """Segment the inputs and write the record; 1 when some inputs could not be used."""
    from pipeline.atomic import remove_stale_temporaries_below
    from pipeline.checkpoints import describe_weights
    from pipeline.handlers import InputFailuresError
    from pipeline.inference.output_lock import output_folder_lock
    from pipeline.preflight import INFER_MIN_FREE_BYTES, check_output_folder, refuse_non_empty_folder
    from pipeline.reports.inference_record import (
        FAILED,
        PENDING,
        SKIPPED,
        WRITTEN,
        InputOutcome,
        write_inference_record,
    )
    from pipeline.volumes import SliceSegmenter
    from pipeline.workflow import check_bundle_overrides, run_bundle, run_values

    output, source = args.output.resolve(), args.input.absolute()
    root = source if source.is_dir() else source.parent
    user_overrides = parse_overrides(args.overrides)
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
        **device_override(args.device),
        **user_overrides,
    }
    check_bundle_overrides(args.bundle, ["inference.json"], settings)
    values = run_values(args.bundle, ["inference.json"], ("input_suffixes", "ckpt_dir", *RECORDED_VALUES), settings)
    found = find_inputs(source, values["input_suffixes"], recursive=args.recursive, exclude=output)
    series, dicom_failures = read_series(source, found.dicom, recursive=args.recursive, exclude=output)
    if not (found.slices or found.volumes or series):
        reasons = [*found.left_out.values(), *dicom_failures, *found.notes.values()]
        raise UserError(nothing_to_segment(source, reasons, args.recursive))
    with output_folder_lock(output):
        if not (args.overwrite or args.skip_complete):
            refuse_non_empty_folder(output, "masks")
        remove_stale_temporaries_below(output)
        check_output_folder(output, INFER_MIN_FREE_BYTES)

        outcomes = planned_outcomes(found, series, settings, args.nifti_copy)
        refuse_shared_outputs(outcomes)
        pending = {key for key, outcome in outcomes.items() if not (args.skip_complete and _complete(outcome.outputs))}
        for key in outcomes.keys() - pending:
            outcomes[key].status, outcomes[key].reason = SKIPPED, "its outputs were already complete"
        to_segment = [path for path in found.slices if path in pending]
        volumes = [path for path in found.volumes if path in pending]
        series = [item for item in series if item.series_uid in pending]

        recorded = {
            "input": str(source),
            "recursive": args.recursive,
            "continue": args.skip_complete,
            "nifti_copy": args.nifti_copy,
            **{key: str(values[key]) if key == "device" else values[key] for key in RECORDED_VALUES},
            **{key: value for key, value in settings.items() if key != "device"},
            "overrides": user_overrides,
        }
        weights = describe_weights(Path(values["ckpt_dir"]) / "model.pt", settings.get("folds"))
        unusable = [InputOutcome(str(path), [], FAILED, line) for path, line in found.left_out.items()]
        unusable += [InputOutcome(line.split(": ", 1)[0], [], FAILED, line) for line in dicom_failures]
        unusable += [InputOutcome(str(path), [], SKIPPED, line) for path, line in found.notes.items()]
        if args.skip_complete and (difference := earlier_settings_differ(output, recorded, weights)):
            raise UserError(
                f"{output}: --continue would keep outputs made otherwise: {difference}; write into a new folder, "
                "or pass --overwrite"
            )
        for key in pending:
            outcomes[key].status = PENDING

        def save_record(finished: bool = False) -> Path:
            everything = [*outcomes.values(), *unusable]
            return write_inference_record(output, args.bundle.resolve(), weights, recorded, everything, finished)

        save_record()
        # Built before any output is written, so a bundle or weights fault stops the run with nothing half done.
        segmenter = SliceSegmenter.from_bundle(args.bundle, settings) if volumes or series else None
        unread = None
        if to_segment:
            try:
                run_bundle(
                    args.bundle,
                    ["inference.json"],
                    "infer",
                    datalist=[{"image": str(p)} for p in to_segment],
                    **settings,
                )
            except Exception as error:
                unread = find_user_error(error)
                if not isinstance(unread, InputFailuresError):
                    raise
        for path in to_segment:
            outcomes[path].status = WRITTEN
        for line in unread.failures if unread else []:
            # A failure line starts with its input's path; the longest match tells "a.png" from "a.png.png".
            failed = max((path for path in to_segment if line.startswith(str(path))), key=lambda path: len(str(path)))
            outcomes[failed].status, outcomes[failed].reason = FAILED, line
        if to_segment:
            save_record()
        if segmenter is not None:
            segment_scans(volumes, series, outcomes, segmenter, on_each=save_record)

        record = save_record(finished=True)
        not_segmented = [outcome.reason for outcome in [*outcomes.values(), *unusable] if outcome.status == FAILED]
        not_segmented = [line for line in not_segmented if not (unread and line in unread.failures)]
        _report_not_segmented(not_segmented)
        if unread is not None:
            raise unread
        counts = _summary(len(to_segment), len(volumes), len(series), len(outcomes) - len(pending))
        print(f"outputs: {args.output} ({counts})")
        print(f"record: {record}")
        return 1 if not_segmented else 0


def planned_outcomes(
    found: Inputs, series: Sequence[DicomSeries], settings: dict, nifti_copy: bool
) -> dict[Path | str, InputOutcome]:
    """The outcome of every input, by path (a DICOM series: by its UID), with the outputs it is to get."""
    from pipeline.reports.inference_record import InputOutcome
    from pipeline.volumes.clinical import series_outputs

    output, root = Path(settings["output_dir"]), Path(settings["data_root_dir"])
    outcomes = {path: InputOutcome(str(path), planned_outputs(path, settings)) for path in found.slices}
    outcomes |= {path: InputOutcome(str(path), [volume_output(path, settings)]) for path in found.volumes}
    for item in series:
        outputs = series_outputs(item, output, root, nifti_copy, overlay=settings["save_overlays"])
        outcomes[item.series_uid] = InputOutcome(item.label, [str(path) for path in outputs])
    return outcomes


def refuse_shared_outputs(outcomes: dict[Path | str, InputOutcome]) -> None:
    """Raise ``UserError`` before anything is written when two inputs would write the same output file (``a.png``
    and ``a.nii.gz`` both give ``a_seg.nii.gz``), naming the file and the inputs."""
    claimed: dict[str, list[str]] = {}
    for outcome in outcomes.values():
        for output in outcome.outputs:
            claimed.setdefault(output, []).append(outcome.input)
    shared = {output: inputs for output, inputs in claimed.items() if len(inputs) > 1}
    if shared:
        output, inputs = next(iter(shared.items()))
        raise UserError(
            f"{output}: {' and '.join(inputs)} would all be written here ({len(shared)} such outputs); rename "
            "them or segment them into separate folders"
        )


def segment_scans(
    volumes: Sequence[Path],
    series: Sequence[DicomSeries],
    outcomes: dict[Path | str, InputOutcome],
    segmenter: SliceSegmenter,
    on_each: Callable[[], object] = lambda: None,
) -> None:
    """Segment the NIfTI ``volumes`` and the DICOM ``series`` with ``segmenter`` into their planned outputs,
    marking each outcome written, or failed with the reason (the others go on), and calling ``on_each`` after
    each (the record is rewritten there)."""
    from pipeline.reports.inference_record import FAILED, WRITTEN
    from pipeline.volumes.clinical import failure_line, segment_nifti_volume, segment_series

    for path in volumes:
        try:
            segment_nifti_volume(path, Path(outcomes[path].outputs[0]), segmenter)
            outcomes[path].status = WRITTEN
        except Exception as error:  # whatever one volume trips on is reported with it, not raised
            outcomes[path].status, outcomes[path].reason = FAILED, failure_line(str(path), error)
        on_each()
    for item in series:
        outcome = outcomes[item.series_uid]
        try:
            segment_series(item, [Path(path) for path in outcome.outputs], segmenter)
            outcome.status = WRITTEN
        except Exception as error:  # an odd header of one series must not cost the others their SEG
            outcome.status, outcome.reason = FAILED, failure_line(item.label, error)
        on_each()


def _summary(slices: int, volumes: int, series: int, skipped: int) -> str:
    counts = ((slices, "slices"), (volumes, "volumes"), (series, "DICOM series"), (skipped, "already done"))
    return ", ".join(f"{count} {what}" for count, what in counts if count)


def _report_not_segmented(lines: Sequence[str]) -> None:
    if lines:
        print(f"error: {len(lines)} inputs were not segmented:", *lines, sep="\n  ", file=sys.stderr)


def _complete(outputs: Sequence[str]) -> bool:
    """Every output exists and reads back whole (a file copied in by hand, or truncated, is done again)."""
    return all(output_reads_back(Path(output)) for output in outputs)


def output_reads_back(path: Path) -> bool:
    """Whether the mask, probability map, overlay or SEG at ``path`` exists and its pixels decode."""
    if not path.is_file():
        return False
    try:
        if path.name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            nib.load(path).get_fdata()
        elif path.suffix == ".dcm":
            import pydicom

            pydicom.dcmread(path).pixel_array  # noqa: B018 (decoding is the check)
        else:
            from PIL import Image

            with Image.open(path) as image:
                image.load()
    except Exception:  # any fault to read it back means the output is not there to keep
        return False
    return True


def earlier_settings_differ(output: Path, recorded: dict, weights: dict) -> str | None:
    """What differs between this run and the run whose record is in ``output``, for the settings that change a
    mask and for the weights; None when they agree or there is no record to compare with."""
    from pipeline.reports.inference_record import RECORD_NAME

    path = output / RECORD_NAME
    if not path.is_file():
        return None
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        earlier_settings, earlier_weights = earlier["settings"], earlier["weights"]
    except (ValueError, KeyError, TypeError):
        return f"{path} cannot be read, so the earlier outputs' settings are unknown"
    for key in MASK_SETTINGS:
        if earlier_settings.get(key) != recorded.get(key):
            return f"{key} was {json.dumps(earlier_settings.get(key))}, now {json.dumps(recorded.get(key))}"
    if earlier_weights.get("sha256") != weights.get("sha256"):
        return f"the weights differ (sha256 {earlier_weights.get('sha256')} then, {weights.get('sha256')} now)"
    return None


def planned_outputs(source: Path, settings: dict) -> list[str]:
    """The mask (and overlay) paths ``configs/inference.json`` writes for the slice ``source`` with ``settings``.

    They are named by the functions ``SaveImaged`` and ``SaveOverlayd`` name them with: the input's folder
    below ``data_root_dir`` is kept below ``output_dir``.
    """
    from pipeline.transforms import overlay_path

    outputs = [_mask_basename(source, settings) + settings["output_ext"]]
    if settings["save_probabilities"]:
        outputs.append(_mask_basename(source, settings, PROBABILITY_POSTFIX) + ".nii.gz")
    if settings["save_overlays"]:
        outputs.append(str(overlay_path(source, Path(settings["output_dir"]) / "overlays", settings["data_root_dir"])))
    return outputs


def volume_output(source: Path, settings: dict) -> str:
    """The NIfTI mask path of the volume ``source``: named as a slice's mask, always ``.nii.gz``."""
    return _mask_basename(source, settings) + ".nii.gz"


def _mask_basename(source: Path, settings: dict, postfix: str = MASK_POSTFIX) -> str:
    from monai.data import create_file_basename

    output_dir, root = settings["output_dir"], settings["data_root_dir"]
    return create_file_basename(postfix, str(source), output_dir, root, separate_folder=False, makedirs=False)


def find_inputs(path: Path, suffixes: Sequence[str], recursive: bool = False, exclude: Path | None = None) -> Inputs:
    """The inputs at ``path`` (one file, the files of a folder, or of its whole tree when ``recursive``) by kind:
    2D slices (``suffixes``, NIfTI of two dimensions), 3D NIfTI volumes and DICOM files, and the files left out,
    each with a line saying why. The figshare fold file ``cvind.mat`` is no slice: it goes to ``notes``, skipped
    without fault. Files under ``exclude`` (the output folder) and hidden files are ignored.

    Raises ``UserError`` when ``path`` does not exist.
    """
    from pipeline.data.sources import CVIND_NAME, is_fold_file
    from pipeline.dicom.series import is_dicom_file
    from pipeline.volumes.clinical import volume_dimensions

    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_file():
        files = [path]
    else:
        entries = path.rglob("*") if recursive else path.iterdir()
        files = sorted(
            entry
            for entry in entries
            if entry.is_file()
            and not entry.name.startswith(".")
            and (exclude is None or not entry.resolve().is_relative_to(exclude))
        )
    found = Inputs()
    for file in files:
        name = file.name.lower()
        if is_fold_file(file):
            found.notes[file] = f"{file}: the figshare fold file ({CVIND_NAME}), no slice; skipped"
        elif name.endswith(NIFTI_SUFFIXES):
            try:
                dimensions = volume_dimensions(file)
            except Exception:  # not a readable NIfTI header: the slice loader reports what is wrong with the file
                dimensions = ()
            if len(dimensions) <= 2:
                found.slices.append(file)
            elif len(dimensions) == 3:
                found.volumes.append(file)
            else:
                found.left_out[file] = (
                    f"{file}: a {len(dimensions)}D NIfTI of shape {dimensions}; infer segments 2D slices and 3D "
                    "volumes: split it into 3D volumes first"
                )
        elif name.endswith(tuple(suffixes)):
            found.slices.append(file)
        elif is_dicom_file(file):
            found.dicom.append(file)
        else:
            found.left_out[file] = f"{file}: unsupported type; infer reads {', '.join(suffixes)} and DICOM files"
    return found


def read_series(
    path: Path, dicom_files: Sequence[Path], recursive: bool = False, exclude: Path | None = None
) -> tuple[list[DicomSeries], list[str]]:
    """The DICOM series at ``path`` and the lines of the files and series that could not be used (none of them
    under ``exclude``), when ``dicom_files`` holds any file; else nothing."""
    from pipeline.dicom.series import read_dicom_folder

    if not dicom_files:
        return [], []
    series, failures = read_dicom_folder(path, recursive=recursive)
    if exclude is not None:
        series = [item for item in series if not any(file.resolve().is_relative_to(exclude) for file in item.files)]
        failures = [line for line in failures if not Path(line.split(": ", 1)[0]).resolve().is_relative_to(exclude)]
    return series, failures


def nothing_to_segment(path: Path, reasons: Sequence[str], recursive: bool) -> str:
    """The one error of an input holding nothing ``infer`` can segment, with each file's (or series') reason."""
    what = "2D slices, 3D NIfTI volumes and DICOM series"
    if reasons:
        return f"{path}: nothing to segment; infer reads {what}, and none of these could be used:" + "".join(
            f"\n  {line}" for line in reasons
        )
    if not recursive and path.is_dir() and any(entry.is_file() for entry in path.rglob("*")):
        return f"{path}: nothing to segment in this folder, only in its subfolders: add --recursive"
    return f"{path}: nothing to segment (no files); infer reads {what}"
