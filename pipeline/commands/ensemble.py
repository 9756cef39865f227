"""``python -m pipeline ensemble``: masks from the probabilities several ``infer --save-probabilities`` runs saved."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import default_bundle_dir
from pipeline.overrides import add_quiet_argument, override_epilog, parse_overrides
from pipeline.user_errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``ensemble`` command."""
    parser = subparsers.add_parser(
        "ensemble",
        help="average the probabilities of several infer --save-probabilities runs into masks",
        description="For every <name>_prob.nii.gz found in all INPUTS folders, average the tumour probabilities, "
        "threshold and post-process them as `infer` does (the bundle's threshold, largest component, holes "
        "filled) and write <name>_seg.nii.gz with the same geometry to OUTPUT, as nnUNetv2_ensemble does. The runs' "
        "records must name the same source slice behind each probability. OUTPUT/inference_record.json names the "
        "runs, their models and settings, and every slice with its mask and status; a slice whose probabilities "
        "cannot be used is listed with the reason, and the exit status is then 1.",
    )
    parser.add_argument("--inputs", type=Path, nargs="+", required=True, help="folders written by infer")
    parser.add_argument("--output", type=Path, required=True, help="folder for the masks")
    parser.add_argument("--overwrite", action="store_true", help="write into an OUTPUT folder that already holds files")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=default_bundle_dir(),
        help="bundle whose threshold and post-processing make the masks (default: %(default)s)",
    )
    add_quiet_argument(parser)
    parser.epilog = override_epilog("--threshold 0.4")
    parser.set_defaults(accepts_overrides=True, must_exist=("inputs",))
    return parser


def run(args: argparse.Namespace) -> int:
    """Check the runs, then write the averaged masks and the record; 1 when some slices could not be averaged."""
    from monai.transforms import Compose

    from pipeline.atomic import remove_stale_temporaries_below
    from pipeline.bundle_configs import bundle_parser
    from pipeline.inference.probability_ensemble import (
        mask_name,
        matching_names,
        read_runs,
        unwritten_reason,
        write_ensemble_mask,
    )
    from pipeline.inference.record import FAILED, FINISHED, PENDING, RUNNING, WRITTEN, InputOutcome
    from pipeline.inference.record import write_inference_record as write_record
    from pipeline.outputs import output_folder_lock, output_path
    from pipeline.preflight import INFER_MIN_FREE_BYTES, check_output_folder, refuse_non_empty_folder
    from pipeline.progress import Progress
    from pipeline.user_errors import find_user_error
    from pipeline.workflow import check_bundle_overrides

    output, folders = args.output.resolve(), [folder.resolve() for folder in args.inputs]
    for folder in folders:
        if output == folder or folder.is_relative_to(output):
            raise UserError(f"{output}: the output folder is or holds the input run {folder}; choose another folder")
    overrides = parse_overrides(args.overrides)
    check_bundle_overrides(args.bundle, ["inference.json"], overrides)
    parser = bundle_parser(args.bundle, ["inference.json"], overrides)
    mask_transforms = Compose(parser.get_parsed_content("mask_transforms"))
    runs = read_runs(folders)
    names = matching_names(runs)
    with output_folder_lock(output):
        if not args.overwrite:
            refuse_non_empty_folder(output, "masks")
        remove_stale_temporaries_below(output)
        check_output_folder(output, INFER_MIN_FREE_BYTES)
        outcomes = {
            name: InputOutcome(
                runs[0].source(name)[0] or str(runs[0].probabilities[name]),
                [str(output_path(output, mask_name(name)))],
                PENDING,
                size=runs[0].source(name)[1],
            )
            for name in names
        }
        settings = {
            "command": "ensemble",
            "inputs": [str(folder) for folder in folders],
            "threshold": parser.get_parsed_content("threshold"),
            "keep_largest_component": parser.get_parsed_content("keep_largest_component"),
            "fill_holes": parser.get_parsed_content("fill_holes"),
            "overrides": overrides,
            "runs": [{"folder": str(run.folder), "settings": run.record.get("settings", {})} for run in runs],
        }
        weights = {"runs": [{"folder": str(run.folder), **run.record.get("weights", {})} for run in runs]}

        def save_record(state: str = RUNNING, error: str = "") -> None:
            write_record(output, args.bundle.resolve(), weights, settings, list(outcomes.values()), state, error)

        save_record()
        try:
            with Progress(len(outcomes), "slices", "averaging", quiet=args.quiet) as progress:
                for name, outcome in outcomes.items():
                    target = Path(outcome.outputs[0])
                    try:
                        if reason := unwritten_reason(runs, name):
                            raise ValueError(reason)
                        write_ensemble_mask([run.probabilities[name] for run in runs], target, mask_transforms)
                        outcome.status = WRITTEN
                    except ValueError as error:
                        target.unlink(missing_ok=True)  # an earlier run's mask must not pass for this run's
                        outcome.status, outcome.reason = FAILED, str(error)
                    progress.advance()
        except Exception as error:  # what stops the run (a full disk) is its record's last word
            fault = find_user_error(error)
            save_record(FAILED, str(fault) if fault else f"{type(error).__name__}: {error}")
            if fault is not None:
                raise fault from None
            raise
        save_record(FINISHED)
    failed = [outcome.reason for outcome in outcomes.values() if outcome.status == FAILED]
    written = len(outcomes) - len(failed)
    source = f"the mean of {len(runs)} runs' probabilities" if len(runs) > 1 else "the probabilities of one run"
    print(f"wrote {written} masks to {args.output} ({source}); record: {output / 'inference_record.json'}")
    if failed:
        print(
            f"error: {len(failed)} of {len(outcomes)} slices were not averaged:", *failed, sep="\n  ", file=sys.stderr
        )
        return 1
    return 0
