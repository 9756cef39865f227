"""Training images/s of the bundle's trainer under several recipes, as ratios to the first, in one process.

Each recipe (``--recipes cpu cpu+deep_supervision``: ``train.json`` and the recipe files, as ``train --recipe``
merges them) trains on the same phantom slices with everything the recipe declares: its transforms and crops,
its network, loss and handlers (validation attached but idle, the latest checkpoint written every epoch). Each
iteration is timed from fetching its batch to the end of its optimiser step; runs alternate (first recipe,
second, ..., then in reverse order, ...) and the median iteration of each recipe over all its runs is kept, so
that load from other processes, and its drift, hits all alike. The first ``--warmup`` iterations of every run
are not timed.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow
from phantom_slices import phantom_datalist
from run_environment import run_environment

from pipeline import default_bundle_dir
from pipeline.bundle_configs import bundle_config_files
from pipeline.commands.train import train_configs

CONFIGS = default_bundle_dir() / "configs"


def recipe_workflow(recipe: str, args: argparse.Namespace, datalist: list[dict], work: Path) -> ConfigWorkflow:
    """The recipe's training workflow on ``datalist``, validation attached but never due, initialised."""
    workflow = ConfigWorkflow(
        config_file=[str(path) for path in bundle_config_files(default_bundle_dir(), train_configs(recipe))],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        bundle_root=str(default_bundle_dir()),
        ckpt_dir=str(work / recipe / "models"),
        output_dir=str(work / recipe / "training"),
        epochs=args.epochs,
        val_interval=args.epochs + 1,
        batch_size=args.batch,
        num_workers=0,
        progress_bar=False,
        device="$torch.device('cpu')",
        **{"train#datalist": datalist, "validate#datalist": datalist[: args.batch]},
    )
    workflow.initialize()
    return workflow


def iteration_seconds(trainer: Engine, warmup: int) -> list[float]:
    """Run ``trainer`` once; the seconds of each iteration after the first ``warmup``, batch fetching included."""
    started: dict[str, float] = {}
    seconds: list[float] = []

    def batch_started(engine: Engine) -> None:
        started["at"] = time.perf_counter()

    def iteration_completed(engine: Engine) -> None:
        if engine.state.iteration > warmup:
            seconds.append(time.perf_counter() - started["at"])

    handlers = [
        trainer.add_event_handler(Events.GET_BATCH_STARTED, batch_started),
        trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration_completed),
    ]
    trainer.run()
    for handler in handlers:
        handler.remove()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["cpu", "cpu+deep_supervision"])
    parser.add_argument("--size", type=int, default=256, help="side of the phantom slices (the recipes' image_size)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=4, help="iterations per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations at the start of every run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each recipe, alternating")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.warmup >= args.iterations * args.epochs:
        parser.error("--warmup must be smaller than --iterations x --epochs")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        datalist = phantom_datalist(work / "phantoms", args.iterations * args.batch, size=args.size)
        workflows = {recipe: recipe_workflow(recipe, args, datalist, work) for recipe in args.recipes}
        seconds: dict[str, list[float]] = {recipe: [] for recipe in args.recipes}
        for repeat in range(args.repeats):
            for recipe in args.recipes if repeat % 2 == 0 else args.recipes[::-1]:
                trainer = workflows[recipe].parser.get_parsed_content("train#trainer")
                seconds[recipe] += iteration_seconds(trainer, args.warmup)
        for workflow in workflows.values():
            workflow.finalize()

    median = {recipe: statistics.median(times) for recipe, times in seconds.items()}
    first = median[args.recipes[0]]
    results = [
        {
            "recipe": recipe,
            "median_iteration_s": round(median[recipe], 3),
            "images_per_s": round(args.batch / median[recipe], 2),
            "time_vs_first": round(median[recipe] / first, 3),
        }
        for recipe in args.recipes
    ]
    print(
        json.dumps(
            {
                "benchmark": "bench_recipes",
                "size": args.size,
                "batch": args.batch,
                "timed_iterations_per_recipe": len(seconds[args.recipes[0]]),
                "repeats": args.repeats,
                "results": results,
                **run_environment(),
            }
        )
    )


if __name__ == "__main__":
    main()
