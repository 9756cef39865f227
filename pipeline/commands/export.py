"""``python -m pipeline export``: TorchScript and ONNX weights plus one shareable, checksummed bundle zip."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import DEFAULT_SCHEMA, default_bundle_dir
from pipeline.overrides import parse_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``export`` command."""
    parser = subparsers.add_parser(
        "export",
        help="export the trained model (TorchScript, ONNX) and package the bundle as one zip",
        description="Write model.ts and model.onnx beside CKPT, and <dist>/<bundle>_v<version>.zip (configs, "
        "docs, licence, the weights of CKPT with their large_files.yml, the requirements.txt its metadata names and a "
        "wheel of this package) with a .sha256 beside it. The network and preprocessing come from the "
        "model_config.json that training wrote beside CKPT; they are written into the zipped configs, so the unzipped "
        "bundle runs as exported wherever those requirements and the wheel are installed. Needs a clone of the "
        "repository (the wheel is built from it). ONNX needs the export extra (pip install '.[export]'); without it "
        "the rest is written.",
    )
    parser.add_argument(
        "--bundle", type=Path, default=default_bundle_dir(), help="bundle folder (default: %(default)s)"
    )
    parser.add_argument(
        "--ckpt", type=Path, default=None, help="checkpoint to export (default: <bundle>/models/model.pt)"
    )
    parser.add_argument("--dist", type=Path, default=None, help="folder for the zip (default: <bundle>/dist)")
    parser.add_argument(
        "--weights-url",
        default=None,
        help="base URL where the weights will be hosted: the zip's large_files.yml lists URL/<file> + SHA-256",
    )
    parser.add_argument(
        "--schema", type=Path, default=DEFAULT_SCHEMA, help="MONAI's metadata schema file (default: %(default)s)"
    )
    parser.set_defaults(accepts_overrides=True)
    return parser


def run(args: argparse.Namespace) -> int:
    """Export and package the bundle; a bad checkpoint or metadata file ends with one error line."""
    from pipeline.checkpoints import with_model_config
    from pipeline.export import export_bundle
    from pipeline.export.onnx_graph import ONNX_INSTALL_HINT
    from pipeline.workflow import check_bundle_overrides

    ckpt_dir = args.ckpt.parent if args.ckpt is not None else args.bundle / "models"
    user_overrides = parse_overrides(args.overrides)
    check_bundle_overrides(args.bundle, ["inference.json"], user_overrides)
    exported = export_bundle(
        args.bundle,
        ckpt_file=args.ckpt,
        overrides=with_model_config(ckpt_dir, user_overrides),
        dist_dir=args.dist,
        weights_url=args.weights_url,
        schema=args.schema,
    )
    for path in (exported.torchscript, exported.onnx, exported.archive, exported.checksum):
        if path is not None:
            print(path)
    if exported.missing_onnx_packages:
        print(
            f"warning: no ONNX model written: {', '.join(exported.missing_onnx_packages)} not installed; "
            f"add them with `{ONNX_INSTALL_HINT}` and export again",
            file=sys.stderr,
        )
    return 0
