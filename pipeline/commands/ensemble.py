"""``python -m pipeline ensemble``: masks from the probabilities several ``infer --save-probabilities`` runs saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import default_bundle_dir
from pipeline.overrides import add_quiet_argument, override_epilog, parse_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``ensemble`` command."""
    parser = subparsers.add_parser(
        "ensemble",
        help="average the probabilities of several infer --save-probabilities runs into masks",
        description="For every <name>_prob.nii.gz found in all INPUTS folders, average the tumour probabilities, "
        "threshold and post-process them as `infer` does (the bundle's threshold, largest component, holes "
        "filled) and write <name>_seg.nii.gz with the same geometry to OUTPUT, as nnUNetv2_ensemble does.",
    )
    parser.add_argument("--inputs", type=Path, nargs="+", required=True, help="folders written by infer")
    parser.add_argument("--output", type=Path, required=True, help="folder for the masks")
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
    """Write the averaged masks and say how many."""
    from monai.transforms import Compose

    from pipeline.bundle_configs import bundle_parser
    from pipeline.inference.probability_ensemble import write_ensemble_masks
    from pipeline.workflow import check_bundle_overrides

    overrides = parse_overrides(args.overrides)
    check_bundle_overrides(args.bundle, ["inference.json"], overrides)
    mask_transforms = Compose(
        bundle_parser(args.bundle, ["inference.json"], overrides).get_parsed_content("mask_transforms")
    )
    written = write_ensemble_masks(args.inputs, args.output, mask_transforms)
    print(f"wrote {len(written)} masks to {args.output} (the mean of {len(args.inputs)} runs' probabilities)")
    return 0
