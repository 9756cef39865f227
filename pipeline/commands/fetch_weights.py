"""``python -m pipeline fetch-weights``: download the weights a bundle's ``large_files.yml`` lists."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import default_bundle_dir
from pipeline.export import BundleExportError, fetch_large_files


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``fetch-weights`` command."""
    parser = subparsers.add_parser(
        "fetch-weights",
        help="download the weights listed in <bundle>/large_files.yml",
        description="Download each file of <bundle>/large_files.yml that is not there yet, checking its hash; "
        "a file already present with the right hash is kept.",
    )
    parser.add_argument(
        "--bundle", type=Path, default=default_bundle_dir(), help="bundle folder (default: %(default)s)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Fetch the weights; a failed download or a wrong hash ends with one error line."""
    try:
        paths = fetch_large_files(args.bundle.resolve())
    except BundleExportError as error:
        raise SystemExit(f"error: {error}") from error
    for path in paths:
        print(path)
    return 0
