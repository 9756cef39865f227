"""``python -m pipeline check``: the checks a bundle must pass before it is shared, one line per failure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import DEFAULT_SCHEMA, default_bundle_dir
from pipeline.overrides import add_checkpoint_argument, parse_overrides
from pipeline.user_errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``check`` command."""
    parser = subparsers.add_parser(
        "check",
        help="check a bundle before sharing it (files, metadata, versioning, network, exports)",
        description="Check BUNDLE as model-zoo's CI does: required files present, metadata valid against MONAI's "
        "schema, a changelog entry for the version, network input/output as the metadata declares; and where "
        "present, the model.ts beside the weights loading and giving their outputs, the zip of this version "
        "holding no entry that unpacks outside its folder and matching its .sha256, large_files.yml matching the "
        "files it lists. Exits 1 with one line per failure.",
    )
    parser.add_argument(
        "--bundle", type=Path, default=default_bundle_dir(), help="bundle folder (default: %(default)s)"
    )
    parser.add_argument(
        "--schema", type=Path, default=DEFAULT_SCHEMA, help="MONAI's metadata schema file (default: %(default)s)"
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--model-zoo",
        action="store_true",
        help="also run Project-MONAI/model-zoo's verify_bundle.py steps, as the zoo runs them: configs/inference.json "
        "alone, models/model.pt exported to TorchScript, the inference workflow's properties (offline)",
    )
    action.add_argument(
        "--write-inference-config",
        action="store_true",
        help="write configs/inference.json anew from common.json, models/model_config.json and its own keys "
        "(after editing common.json or shipping another model), then check",
    )
    add_checkpoint_argument(parser)
    parser.epilog = (
        "The network is built from configs/inference.json and models/model_config.json; other --KEY VALUE pairs "
        "override them for the network check."
    )
    parser.set_defaults(accepts_overrides=True)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print every problem found; 0 when the bundle passes, 1 otherwise."""
    from pipeline.bundle_configs import write_standalone_inference
    from pipeline.checkpoints import require_checkpoint, with_model_config
    from pipeline.export import check_bundle
    from pipeline.export.zoo_verification import ZooCheckError, verify_like_model_zoo
    from pipeline.workflow import check_bundle_overrides

    if not args.bundle.is_dir():
        raise UserError(f"{args.bundle}: no such bundle folder; pass --bundle BUNDLE_FOLDER")
    if not args.schema.is_file():
        raise UserError(f"{args.schema}: no such schema file; pass MONAI's metadata schema with --schema")
    if args.write_inference_config:
        print(f"wrote {write_standalone_inference(args.bundle)}")
    user_overrides = parse_overrides(args.overrides)
    if user_overrides:
        check_bundle_overrides(args.bundle, ["inference.json"], user_overrides)
    ckpt_dir = Path(user_overrides.get("ckpt_dir", args.bundle / "models"))
    if "ckpt_dir" in user_overrides:  # weights the user names must be there; the bundle may ship without its own
        require_checkpoint(ckpt_dir / "model.pt")
    overrides = with_model_config(ckpt_dir, user_overrides)
    report = check_bundle(args.bundle.resolve(), overrides, schema=args.schema, ckpt_file=ckpt_dir / "model.pt")
    if args.model_zoo and not report.problems:
        try:
            print(*verify_like_model_zoo(args.bundle.resolve(), args.schema), sep="\n")
        except ZooCheckError as error:
            report.problems.append(str(error))
    for line in report.problems:
        print(f"FAIL {line}", file=sys.stderr)
    if report.problems:
        return 1
    print(f"bundle check passed: {args.bundle}")
    return 0
