"""``python -m pipeline train``: train the bundle's U-Net on a prepared dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.overrides import (
    add_bundle_arguments,
    add_checkpoint_argument,
    device_override,
    parse_overrides,
    quiet_override,
)
from pipeline.user_errors import UserError

# The lists a training reads from the datalist.
TRAINING_LISTS = ("training", "validation")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="train the U-Net (configs/train.json)",
        description="Train the bundle's U-Net on DATASET_DIR/datalist.json (written by `prepare`); the best "
        "checkpoint by validation Dice goes to <bundle>/models/model.pt, the state to resume from to "
        "<bundle>/models/latest_checkpoint_epoch=N.pt after every epoch.",
    )
    parser.add_argument("--dataset-dir", "--dataset_dir", type=Path, required=True, help="folder holding datalist.json")
    add_checkpoint_argument(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--resume", action="store_true", help="continue the run whose latest checkpoint is in the checkpoint folder"
    )
    start.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run over an earlier run's checkpoints (its model.pt is replaced at the first validation)",
    )
    parser.add_argument(
        "--init-from",
        metavar="bundle|PATH",
        help="fine-tune: start from trained weights instead of random ones: `bundle` for the bundle's shipped "
        "model (models/model.pt), or a model.pt; the network must be configured as theirs (the shipped model: "
        "--recipe cpu)",
    )
    parser.add_argument(
        "--init-fold",
        type=int,
        metavar="K",
        help="with --init-from a fold ensemble (the shipped model): start from its fold-K member",
    )
    parser.add_argument(
        "--recipe",
        default=None,
        help="merge configs/train_RECIPE.json onto train.json, e.g. `cpu` for the recipe tuned for a few CPU cores; "
        "join recipes with + to merge them in turn, e.g. `cpu+augment`",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log the loss of every iteration, not only one line per epoch"
    )
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="worker processes on this machine, one per GPU; more than 1 starts them with torch.distributed.run "
        "(default: %(default)s)",
    )
    add_bundle_arguments(parser, example="--epochs 5 --train#dataloader#batch_size 4")
    parser.set_defaults(accepts_overrides=True, must_exist=("dataset_dir",))
    return parser


def run(args: argparse.Namespace) -> int:
    """Check the dataset, the overrides and the output folders, then run (or resume) the training workflow."""
    from pipeline.distributed import launch, with_multi_gpu_config, worker_argv, world_size
    from pipeline.preflight import require_datalist
    from pipeline.workflow import check_bundle_overrides, run_bundle

    overrides = {
        "dataset_dir": str(args.dataset_dir.resolve()),
        **device_override(args.device),
        **quiet_override(args.quiet),
        **parse_overrides(args.overrides),
    }
    if args.resume:
        overrides["resume"] = True
    if args.overwrite:
        overrides["overwrite"] = True
    if args.verbose:
        overrides["iteration_log"] = True
    overrides.update(init_overrides(args.bundle, args.init_from, args.init_fold))
    require_recipe(args.bundle, args.recipe)
    datalist_path, datalist = require_datalist(args.dataset_dir, TRAINING_LISTS)
    check_bundle_overrides(args.bundle, train_configs(args.recipe), overrides)
    _preflight(args, overrides, datalist_path, datalist)
    if args.gpus > 1 and world_size() == 1:
        return launch(args.gpus, worker_argv(args.argv))
    run_bundle(args.bundle, with_multi_gpu_config(train_configs(args.recipe)), "train", **overrides)
    return 0


def train_configs(recipe: str | None) -> list[str]:
    """``train.json``, followed by the override ``train_<name>.json`` of each name in ``recipe``.

    Recipes compose with ``+``, left to right: ``cpu+augment`` merges ``train_cpu.json``, then ``train_augment.json``.
    """
    return ["train.json"] + [f"train_{name}.json" for name in (recipe.split("+") if recipe else [])]


def init_overrides(bundle: str | Path, init_from: str | None, init_fold: int | None) -> dict[str, str | int]:
    """The overrides ``init_from`` and ``init_fold`` of ``--init-from`` (``bundle`` or a path) and ``--init-fold``."""
    if init_from is None:
        if init_fold is not None:
            raise UserError(f"--init-fold {init_fold}: needs --init-from (bundle, or the fold ensemble's model.pt)")
        return {}
    path = Path(bundle) / "models" / "model.pt" if init_from == "bundle" else Path(init_from)
    return {"init_from": str(path.resolve()), **({} if init_fold is None else {"init_fold": init_fold})}


def require_recipe(bundle: str | Path, recipe: str | None) -> None:
    """Refuse, in one line, a recipe name with no ``configs/train_<name>.json`` in the bundle."""
    configs = Path(bundle) / "configs"
    for recipe_file in train_configs(recipe)[1:]:
        if not (configs / recipe_file).is_file():
            known = sorted(path.stem.removeprefix("train_") for path in configs.glob("train_*.json"))
            raise UserError(f"{configs / recipe_file}: no such recipe; the bundle has: {', '.join(known) or 'none'}")


def _preflight(args: argparse.Namespace, overrides: dict, datalist_path: Path, datalist: dict) -> None:
    from pipeline.checkpoints import guard_earlier_run
    from pipeline.preflight import (
        TRAIN_MIN_FREE_BYTES,
        bundle_config_values,
        check_output_folder,
        refuse_output_among_inputs,
    )

    folders = bundle_config_values(args.bundle, train_configs(args.recipe), ("ckpt_dir", "output_dir"), overrides)
    refuse_output_among_inputs(folders.values(), datalist_path, datalist, TRAINING_LISTS)
    for folder in (folders["ckpt_dir"], folders["output_dir"]):
        check_output_folder(folder, TRAIN_MIN_FREE_BYTES)
    # train.json checks again as it starts; checking here refuses before the datasets are cached.
    guard_earlier_run(folders["ckpt_dir"], resume=args.resume, overwrite=args.overwrite)
