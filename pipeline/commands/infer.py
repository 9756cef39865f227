"""``python -m pipeline infer``: segment slices, one file or a folder (tree), and write masks, overlays and a record."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.overrides import add_bundle_arguments, device_override, parse_overrides
from pipeline.user_errors import UserError, find_user_error

# The resolved config values an inference record keeps beside the command's own settings.
RECORDED_VALUES = ("device", "threshold", "image_size")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``infer`` command."""
    parser = subparsers.add_parser(
        "infer",
        help="segment .mat/.png/.nii(.gz) slices, one file or a folder (configs/inference.json)",
        description="Segment every .mat, .png, .nii and .nii.gz slice in INPUT with <bundle>/models/model.pt; "
        "masks keep each input's size and orientation. OUTPUT/inference_record.json lists the bundle version, "
        "the weights' SHA-256, the settings and every input with its outputs and status. Files that cannot be "
        "read are skipped and listed at the end, and the exit status is then 1.",
    )
    parser.add_argument("--input", type=Path, required=True, help="a slice, or a folder of slices, to segment")
    parser.add_argument("--output", type=Path, required=True, help="folder for the masks and overlays")
    parser.add_argument(
        "--format", choices=["nii.gz", "png"], default="nii.gz", help="mask file format (default: %(default)s)"
    )
    parser.add_argument(
        "--recursive", action="store_true", help="also segment the slices of subfolders, mirroring them in OUTPUT"
    )
    parser.add_argument("--tta", action="store_true", help="average with a left-right flipped pass")
    parser.add_argument("--no-overlays", action="store_true", help="don't write overlay PNGs")
    parser.add_argument("--no-postprocessing", action="store_true", help="keep all components, don't fill holes")
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


def run(args: argparse.Namespace) -> int:
    """Segment the inputs and write the record; 1 when some inputs could not be read."""
    from pipeline.handlers import InputFailuresError
    from pipeline.preflight import INFER_MIN_FREE_BYTES, check_output_folder, refuse_non_empty_folder
    from pipeline.reports.inference_record import FAILED, SKIPPED, InputOutcome, write_inference_record
    from pipeline.workflow import check_bundle_overrides, run_bundle, run_values

    output, source = args.output.resolve(), args.input.absolute()
    user_overrides = parse_overrides(args.overrides)
    settings = {
        "output_dir": str(output),
        "data_root_dir": str(source if source.is_dir() else source.parent),
        "output_ext": f".{args.format}",
        "flip_tta": args.tta,
        "save_overlays": not args.no_overlays,
        "keep_largest_component": not args.no_postprocessing,
        "fill_holes": not args.no_postprocessing,
        **device_override(args.device),
        **user_overrides,
    }
    check_bundle_overrides(args.bundle, ["inference.json"], settings)
    values = run_values(args.bundle, ["inference.json"], ("input_suffixes", "ckpt_dir", *RECORDED_VALUES), settings)
    slices, left_out = input_slices(source, values["input_suffixes"], recursive=args.recursive, exclude=output)
    if not (args.overwrite or args.skip_complete):
        refuse_non_empty_folder(output, "masks")
    check_output_folder(output, INFER_MIN_FREE_BYTES)

    outcomes = {path: InputOutcome(str(path), planned_outputs(path, settings)) for path in slices}
    to_segment = [path for path in slices if not (args.skip_complete and _complete(outcomes[path].outputs))]
    for path in set(slices) - set(to_segment):
        outcomes[path].status, outcomes[path].reason = SKIPPED, "its outputs were already complete"
    unread = None
    if to_segment:
        try:
            run_bundle(
                args.bundle, ["inference.json"], "infer", datalist=[{"image": str(p)} for p in to_segment], **settings
            )
        except Exception as error:
            unread = find_user_error(error)
            if not isinstance(unread, InputFailuresError):
                raise
    for line in unread.failures if unread else []:
        # A failure line starts with its input's path; the longest match tells "a.png" from "a.png.png".
        failed = max((path for path in to_segment if line.startswith(str(path))), key=lambda path: len(str(path)))
        outcomes[failed].status, outcomes[failed].reason = FAILED, line
    recorded = {
        "input": str(source),
        "recursive": args.recursive,
        "continue": args.skip_complete,
        **{key: str(values[key]) if key == "device" else values[key] for key in RECORDED_VALUES},
        **{key: value for key, value in settings.items() if key != "device"},
        "overrides": user_overrides,
    }
    unsupported = [InputOutcome(str(path), [], FAILED, line) for path, line in left_out.items()]
    record = write_inference_record(
        output,
        args.bundle.resolve(),
        Path(values["ckpt_dir"]) / "model.pt",
        recorded,
        [*outcomes.values(), *unsupported],
    )
    _report_left_out(list(left_out.values()))
    if unread is not None:
        raise unread
    skipped = len(slices) - len(to_segment)
    print(f"masks: {args.output} ({len(to_segment)} slices{f', {skipped} already done' if skipped else ''})")
    print(f"record: {record}")
    return 1 if left_out else 0


def _report_left_out(left_out: Sequence[str]) -> None:
    if left_out:
        print(f"error: {len(left_out)} files were not segmented:", *left_out, sep="\n  ", file=sys.stderr)


def _complete(outputs: Sequence[str]) -> bool:
    # Masks and overlays are written atomically: a file that exists is whole.
    return all(Path(output).is_file() for output in outputs)


def planned_outputs(source: Path, settings: dict) -> list[str]:
    """The mask (and overlay) paths ``configs/inference.json`` writes for ``source`` with ``settings``.

    They are named by the functions ``SaveImaged`` and ``SaveOverlayd`` name them with: the input's folder
    below ``data_root_dir`` is kept below ``output_dir``.
    """
    from monai.data import create_file_basename

    from pipeline.transforms import overlay_path

    output_dir, root = settings["output_dir"], settings["data_root_dir"]
    mask = create_file_basename("seg", str(source), output_dir, root, separate_folder=False, makedirs=False)
    outputs = [mask + settings["output_ext"]]
    if settings["save_overlays"]:
        outputs.append(str(overlay_path(source, Path(output_dir) / "overlays", root)))
    return outputs


def input_slices(
    path: Path, suffixes: Sequence[str], recursive: bool = False, exclude: Path | None = None
) -> tuple[list[Path], dict[Path, str]]:
    """The slices to segment at ``path`` (one file, the files of a folder, or of its whole tree when
    ``recursive``), and the files left out, each with a line saying why; files under ``exclude`` (the output
    folder) and hidden files are ignored.

    Raises ``UserError`` when ``path`` does not exist or holds no slice of a supported type.
    """
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
    slices = [file for file in files if file.name.lower().endswith(tuple(suffixes))]
    left_out = {
        file: f"{file}: unsupported type; infer reads {', '.join(suffixes)}"
        + (" (DICOM is not read yet: convert the series to NIfTI)" if file.suffix.lower() == ".dcm" else "")
        for file in files
        if file not in slices
    }
    if not slices:
        found = f"{len(files)} files of other types" if files else "nothing"
        raise UserError(f"{path}: no slice to segment ({found}); infer reads {', '.join(suffixes)}")
    return slices, left_out
