"""How fast ``python -m pipeline --help`` answers, against a bare Python start.

    python benchmarks/bench_cli_help.py [--repeats 7]

Times ``python -m pipeline --help`` and ``python -m pipeline train --help`` in fresh processes, alternating with
``python -c pass``, and reports the median of each and their ratios to the bare start. The command line
imports MONAI and torch only once a command runs, so ``--help`` costs little more than starting Python.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run_environment import run_environment

REPOSITORY = Path(__file__).resolve().parents[1]
COMMANDS = {
    "bare_python": ["-c", "pass"],
    "help": ["-m", "pipeline", "--help"],
    "train_help": ["-m", "pipeline", "train", "--help"],
}


def seconds(arguments: list[str]) -> float:
    """Wall-clock seconds of ``python <arguments>`` run in the repository, its output discarded."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=REPOSITORY, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=7, help="runs of each command, median kept (default: %(default)s)"
    )
    args = parser.parse_args()

    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for arguments in COMMANDS.values():
        seconds(arguments)  # warm the file cache
    for _ in range(args.repeats):
        for name, arguments in COMMANDS.items():
            times[name].append(seconds(arguments))
    median = {name: statistics.median(runs) for name, runs in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "cli_help",
                "repeats": args.repeats,
                **{f"{name}_s": round(value, 3) for name, value in median.items()},
                "help_over_bare": round(median["help"] / median["bare_python"], 2),
                "train_help_over_bare": round(median["train_help"] / median["bare_python"], 2),
                **run_environment(),
            }
        )
    )


if __name__ == "__main__":
    main()
