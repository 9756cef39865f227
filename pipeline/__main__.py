"""``python -m pipeline <command>``: thin entry points over the data tools and the bundle workflows."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from pipeline import BUNDLE_NAME, __version__, default_bundle_dir
from pipeline.user_errors import find_user_error

# Modules under pipeline/commands, in the order `--help` lists them; each registers its own (hyphenated) name.
COMMANDS = (
    "synth",
    "prepare",
    "download",
    "train",
    "evaluate",
    "crossval",
    "infer",
    "ensemble",
    "dicom",
    "dicomweb",
    "serve",
    "demo",
    "export",
    "check",
    "fetch_weights",
)


def version_text() -> str:
    """The package version and the shipped bundle's version (read from its metadata, without importing MONAI)."""
    metadata = default_bundle_dir() / "configs" / "metadata.json"
    bundle = json.loads(metadata.read_text(encoding="utf-8"))["version"] if metadata.is_file() else "not found"
    return f"pipeline {__version__}, bundle {BUNDLE_NAME} {bundle}"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; building it imports neither MONAI nor torch, so ``--help`` answers at once."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Brain tumour segmentation in 2D MRI slices with a MONAI bundle and a custom U-Net.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of every error, the user's faults included"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"pipeline.commands.{name}")
        module.add_parser(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the chosen command and return its exit code.

    An error the user can act on (a ``UserError`` anywhere in the chain of the exception raised) is printed
    as ``error: <message>`` on stderr and gives exit code 1; any other exception keeps its traceback.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = extra
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args) or 0)
    except Exception as error:
        user_error = None if args.debug else find_user_error(error)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
