"""``python -m pipeline prepare``: check a dataset, split it patient-wise and write its ``datalist.json``."""

import argparse
import contextlib
import os
from pathlib import Path

from pipeline.data.datalist import DATALIST_NAME, format_summary
from pipeline.data.meta import META_FOLDS
from pipeline.data.split import DEFAULT_FRACTIONS


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``prepare`` and its options."""
    parser = subparsers.add_parser(
        "prepare",
        help="check a dataset and write a patient-wise datalist.json",
        description=(
            "Find the layout of SRC (N.mat files, the figshare zips, images/+masks/ PNG pairs or images/+labels/ "
            "NIfTI pairs), check every slice, split patients into training/validation/test and write "
            f"OUT/{DATALIST_NAME}. Every bad file is listed, and then nothing is written."
        ),
    )
    parser.add_argument("--src", type=Path, required=True, help="the source folder")
    parser.add_argument("--out", type=Path, required=True, help="the dataset folder that receives the datalist")
    parser.add_argument("--meta", type=Path, help="CSV with index,label,label_name,pid,fold for image/NIfTI pairs")
    parser.add_argument(
        "--folds",
        help=f"fold source for --val-fold/--test-fold: a cvind.mat, or '{META_FOLDS}' for the --meta fold column "
        "(default: cvind.mat beside the data, else the --meta fold column)",
    )
    parser.add_argument("--val-fold", type=int, help="use the folds: this fold is the validation set")
    parser.add_argument("--test-fold", type=int, help="use the folds: this fold is the test set (default: none)")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=list(DEFAULT_FRACTIONS),
        metavar=("TRAIN", "VAL", "TEST"),
        help="share of patients per set when no fold is chosen (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient draw (default: %(default)s)")
    parser.add_argument("--binarize", action="store_true", help="threshold grey masks at half their maximum")
    parser.add_argument("--to-nifti", action="store_true", help="convert every pair to NIfTI under OUT/nifti/")
    parser.set_defaults(must_exist=("src", "meta"))
    return parser


def run(args: argparse.Namespace) -> int:
    """Prepare the dataset and print its summary; an output folder that cannot be written and every problem found
    end the command with exit code 1."""
    from pipeline.data.prepare import prepare_dataset
    from pipeline.outputs import output_folder_lock
    from pipeline.preflight import check_output_folder

    check_output_folder(args.out, 0, create=False)
    created = not os.path.lexists(args.out)
    try:
        with output_folder_lock(args.out):
            datalist = prepare_dataset(
                args.src,
                args.out,
                meta=args.meta,
                folds=args.folds,
                val_fold=args.val_fold,
                test_fold=args.test_fold,
                fractions=args.fractions,
                seed=args.seed,
                binarize=args.binarize,
                to_nifti=args.to_nifti,
            )
    except Exception:
        if created:  # the lock made the folder: a refused dataset leaves none behind
            with contextlib.suppress(OSError):
                Path(args.out).rmdir()
        raise
    print(format_summary(datalist))
    print(f"wrote {Path(args.out) / DATALIST_NAME}")
    return 0
