"""``python -m pipeline train``: train the bundle's U-Net on a prepared dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.workflow import add_bundle_arguments, device_override, parse_overrides, run_bundle


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="train the U-Net (configs/train.json)",
        description="Train the bundle's U-Net on DATASET_DIR/datalist.json (written by `prepare`); the best "
        "checkpoint by validation Dice goes to <bundle>/models/model.pt.",
    )
    parser.add_argument("--dataset-dir", type=Path, required=True, help="folder holding datalist.json")
    add_bundle_arguments(parser)
    parser.set_defaults(accepts_overrides=True)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the training workflow."""
    run_bundle(
        args.bundle,
        ["train.json"],
        "train",
        dataset_dir=str(args.dataset_dir.resolve()),
        **device_override(args.device),
        **parse_overrides(args.overrides),
    )
    return 0
