"""``python -m pipeline evaluate``: score the trained model per slice, tumour type and patient."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.overrides import (
    add_bundle_arguments,
    add_checkpoint_argument,
    add_folds_argument,
    add_strict_weights_argument,
    device_override,
    folds_override,
    parse_overrides,
    quiet_override,
    strict_weights_override,
)
from pipeline.user_errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``evaluate`` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate the trained model (configs/train.json + evaluate.json)",
        description="Evaluate <bundle>/models/model.pt on a split of DATASET_DIR/datalist.json at each slice's "
        "own resolution: Dice and HD95 per slice, per tumour type and per patient (CSV, JSON, PNG).",
    )
    parser.add_argument("--dataset-dir", "--dataset_dir", type=Path, required=True, help="folder holding datalist.json")
    parser.add_argument("--split", default="test", help="datalist list to evaluate (default: %(default)s)")
    add_checkpoint_argument(parser)
    add_folds_argument(parser)
    add_strict_weights_argument(parser)
    add_bundle_arguments(parser, example="--threshold 0.4 --flip_tta false")
    parser.set_defaults(accepts_overrides=True, must_exist=("dataset_dir",))
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the evaluation workflow and print the summary per tumour type."""
    from pipeline.preflight import bundle_config_values, refuse_output_among_inputs, require_datalist
    from pipeline.workflow import run_bundle

    datalist_path, datalist = require_datalist(args.dataset_dir, [args.split])
    if not datalist.get(args.split):
        raise UserError(f"{datalist_path}: the '{args.split}' list is empty; choose another with --split")
    overrides = {
        "dataset_dir": str(args.dataset_dir.resolve()),
        "eval_split": args.split,
        **folds_override(args.folds),
        **strict_weights_override(args.strict_weights),
        **device_override(args.device),
        **quiet_override(args.quiet),
        **parse_overrides(args.overrides),
    }
    configs = ["train.json", "evaluate.json"]
    output_dir = bundle_config_values(args.bundle, configs, ["output_dir"], overrides)["output_dir"]
    refuse_output_among_inputs([output_dir], datalist_path, datalist, [args.split])
    workflow = run_bundle(args.bundle, configs, "eval", **overrides)
    output_dir = Path(workflow.parser.get_parsed_content("output_dir"))
    summary = json.loads((output_dir / "summary.json").read_text())
    print(format_summary(summary))
    print(f"report: {output_dir}")
    return 0


def format_summary(summary: dict) -> str:
    """One line per tumour type and one overall line: n, mean and median Dice, median HD95."""
    lines = [f"{'tumour type':<12} {'n':>4} {'Dice mean':>9} {'median':>7} {'HD95 median':>11}"]
    rows = [*summary["per_tumor_type"].items(), ("all", summary["overall"])]
    for name, stats in rows:
        hd95 = stats["hd95_median"]
        hd95_text = "n/a" if hd95 is None else f"{hd95:.1f}"
        lines.append(
            f"{name:<12} {stats['n']:>4} {stats['dice_mean']:>9.3f} {stats['dice_median']:>7.3f} {hd95_text:>11}"
        )
    return "\n".join(lines)
