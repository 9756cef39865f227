"""``python -m pipeline fetch-weights``: download the weights a bundle's ``large_files.yml`` lists."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import default_bundle_dir
from pipeline.user_errors import UserError


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
    """Fetch the weights and print their paths; 0 with a note when the bundle lists none to fetch.

    A missing bundle folder or ``large_files.yml``, a failed download or a wrong hash ends with one error line.
    """
    from pipeline.export import fetch_large_files, read_large_files
    from pipeline.export.large_files import LARGE_FILES

    bundle = args.bundle.resolve()
    if not bundle.is_dir():
        raise UserError(f"{args.bundle}: no such bundle folder; pass --bundle BUNDLE_FOLDER")
    listing = bundle / LARGE_FILES
    if not listing.is_file():
        raise UserError(f"{listing}: not found; this bundle names no weights to fetch")
    if not read_large_files(bundle):
        print(f"nothing to fetch: {listing} lists no weights (a bundle exported with --weights-url lists them)")
        return 0
    for path in fetch_large_files(bundle):
        print(path)
    return 0
