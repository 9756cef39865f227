"""``python -m pipeline crossval``: train one model per fold, score each on its own fold, join them into the
shipped ensemble."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.overrides import add_bundle_arguments, device_override, parse_overrides, quiet_override
from pipeline.user_errors import UserError

DEFAULT_FOLDS = (1, 2, 3, 4)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``crossval`` command."""
    parser = subparsers.add_parser(
        "crossval",
        help="cross-validate over the dataset's folds and join the fold models into an ensemble",
        description="For each fold K: prepare OUT/fold_K (fold K validates, the other folds train), train it, "
        "take its final-epoch weights and score them on fold K. Runs one fold after the other and resumes "
        "where an earlier run stopped (rerun the same command). Then writes the cross-validation table over "
        "every scored slice (OUT/crossval_summary.md, .json, per-slice CSV, learning curves). --ship joins the "
        "trained fold models into the bundle's models/model.pt.",
    )
    parser.add_argument("--out", type=Path, required=True, help="the cross-validation folder (created or resumed)")
    parser.add_argument("--src", type=Path, help="the source slices, as `prepare --src` takes them (first run only)")
    parser.add_argument("--meta", type=Path, help="CSV with the slices' pid and fold, as `prepare --meta` takes it")
    parser.add_argument(
        "--fold-source",
        dest="fold_source",
        help="where the folds come from: a cvind.mat, or 'meta' for the --meta fold column (default as `prepare`)",
    )
    parser.add_argument(
        "--folds", type=int, nargs="+", default=list(DEFAULT_FOLDS), help="the folds to run (default: 1 2 3 4)"
    )
    parser.add_argument("--recipe", default=None, help="training recipe, as `train --recipe` takes it, e.g. cpu")
    parser.add_argument(
        "--summary-only", action="store_true", help="train nothing: write the table of the folds scored so far"
    )
    parser.add_argument(
        "--adopt-shipped",
        action="store_true",
        help="take the fold models the bundle ships (models/model.pt) as the models of those folds instead of "
        "training them again, e.g. to go on with the other folds on a new machine",
    )
    parser.add_argument(
        "--ship",
        action="store_true",
        help="after the table, write the ensemble of the trained folds to <bundle>/models (replacing its model) and "
        "configs/inference.json with its definition",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="with --ship, replace a shipped ensemble even by one that lacks some of its folds",
    )
    add_bundle_arguments(parser, example="--epochs 30 --val_interval 4")
    parser.set_defaults(accepts_overrides=True, must_exist=("src", "meta"))
    return parser


def run(args: argparse.Namespace) -> int:
    """Prepare, train and score the folds that are not done, then write the table (and ship the ensemble), holding
    the cross-validation folder's lock: two runs never train the same fold."""
    from pipeline.outputs import output_folder_lock

    with output_folder_lock(args.out):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pipeline.bundle_configs import bundle_parser, write_standalone_inference
    from pipeline.commands.train import require_recipe, train_configs
    from pipeline.data.prepare import prepare_dataset
    from pipeline.export.fold_ensemble import assemble_fold_ensemble, refuse_dropping_folds, split_fold_ensemble
    from pipeline.export.large_files import refresh_large_file_hashes
    from pipeline.reports.crossval_summary import SUMMARY_MD, write_crossval_summary
    from pipeline.training.crossval import fold_overrides, fold_paths, run_crossval
    from pipeline.workflow import check_bundle_overrides, run_bundle

    folds = fold_paths(args.out, sorted(set(args.folds)))
    for fold in folds:
        fold.require_own_folders()  # a link planted in a fold folder, refused before anything is written
    models = Path(args.bundle).resolve() / "models"
    if args.ship and not args.overwrite:
        refuse_dropping_folds(models, [fold.fold for fold in folds])  # before hours of training, not after
    overrides = {**device_override(args.device), **quiet_override(args.quiet), **parse_overrides(args.overrides)}
    require_recipe(args.bundle, args.recipe)
    configs = train_configs(args.recipe)
    if not args.summary_only:
        for fold in folds:
            if not fold.datalist.is_file():
                if args.src is None:
                    raise UserError(f"{fold.datalist}: not prepared yet; pass --src (and --meta) to prepare it")
                prepare_dataset(args.src, fold.folder, meta=args.meta, folds=args.fold_source, val_fold=fold.fold)
        if args.adopt_shipped:
            missing = {fold.fold: fold.model_dir for fold in folds if not fold.trained}
            adopted = split_fold_ensemble(models, missing)
            print(f"adopted the shipped models of folds {adopted}" if adopted else "the bundle ships no fold to adopt")
        check_bundle_overrides(args.bundle, configs, fold_overrides(folds[0], overrides))
        epochs = bundle_parser(args.bundle, configs, overrides).get_parsed_content("epochs")

        def train(fold, resume: bool) -> None:
            # A fold with no latest checkpoint starts afresh, over whatever a run stopped in its first epoch left.
            fresh = {"resume": True} if resume else {"overwrite": True}
            run_bundle(args.bundle, configs, "train", **fold_overrides(fold, overrides), **fresh)

        def evaluate(fold) -> None:
            run_bundle(
                args.bundle,
                ["train.json", "evaluate.json"],
                "eval",
                dataset_dir=str(fold.folder.resolve()),
                eval_split="validation",
                ckpt_dir=str(fold.model_dir.resolve()),
                output_dir=str(fold.validation.resolve()),
                **device_override(args.device),
                **quiet_override(args.quiet),
            )

        run_crossval(folds, train, evaluate, epochs)
    summary = write_crossval_summary(args.out, folds)
    print((args.out / SUMMARY_MD).read_text(encoding="utf-8"))
    if args.ship:
        trained = {fold.fold: fold.model_dir for fold in folds if fold.trained}
        if not args.overwrite:
            refuse_dropping_folds(models, list(trained))
        shipped = assemble_fold_ensemble(trained, models)
        refresh_large_file_hashes(Path(args.bundle).resolve())
        write_standalone_inference(args.bundle)
        print(f"shipped the ensemble of folds {shipped['folds']} to {models}")
    return 0 if not summary["folds_missing"] or args.summary_only else 1
