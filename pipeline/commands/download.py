"""``python -m pipeline download``: fetch the figshare dataset, then prepare it with the author's folds."""

import argparse
import sys
from pathlib import Path

from pipeline.data.datalist import DATALIST_NAME, format_summary

DOWNLOAD_DIR = "downloads"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``download`` and its options."""
    parser = subparsers.add_parser(
        "download",
        help="fetch the figshare brain tumour dataset and prepare it",
        description=(
            f"Fetch the four archives and cvind.mat of the figshare brain tumour dataset into OUT/{DOWNLOAD_DIR}/, "
            "checking their MD5 and skipping files already complete, then prepare OUT with the author's folds."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="the dataset folder")
    parser.add_argument("--mirror", help="a folder or base URL (https://, file://) holding the files by name")
    parser.add_argument("--val-fold", type=int, default=4, help="validation fold (default: %(default)s)")
    parser.add_argument("--test-fold", type=int, default=5, help="test fold (default: %(default)s)")
    parser.add_argument("--to-nifti", action="store_true", help="convert every slice to NIfTI under OUT/nifti/")
    return parser


def run(args: argparse.Namespace) -> int:
    """Download, then prepare, and print the summary."""
    from pipeline.data.download import download_figshare
    from pipeline.data.prepare import prepare_dataset
    from pipeline.outputs import output_folder_lock, own_subfolder
    from pipeline.preflight import check_output_folder

    check_output_folder(args.out, 0)
    with output_folder_lock(args.out):
        downloads = own_subfolder(args.out, DOWNLOAD_DIR)
        download_figshare(downloads, args.mirror, progress=sys.stderr.isatty())
        datalist = prepare_dataset(
            downloads, args.out, val_fold=args.val_fold, test_fold=args.test_fold, to_nifti=args.to_nifti
        )
    print(format_summary(datalist))
    print(f"wrote {Path(args.out) / DATALIST_NAME}")
    return 0
