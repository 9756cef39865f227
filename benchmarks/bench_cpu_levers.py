"""Training images/s of the CPU recipe's network under the CPU's speed levers, as ratios within one run.

Levers: torch threads (1 or all cores), channels-last memory format, and bf16 autocast. bf16 is only timed
where the processor has native bf16 (``avx512_bf16`` or ``amx_bf16`` in its flags); on an AVX2-only processor
it is emulated and many times slower, so it is reported as skipped there. Each configuration runs the same
training step (forward, DiceCE loss, backward, AdamW) on the same random batch; the configurations alternate
over ``--rounds`` rounds and the fastest round of each is kept, so that load from other processes hits all alike.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import torch
from monai.losses import DiceCELoss
from run_environment import run_environment

from pipeline.networks import UNet2D

# Processor flags (as Linux lists them in /proc/cpuinfo) that execute bf16 arithmetic in hardware.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The native-bf16 flags of this processor, sorted; empty where bf16 would be emulated (or not Linux)."""
    try:
        lines = open(cpuinfo, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        return []
    flags = next((set(line.partition(":")[2].split()) for line in lines if line.startswith("flags")), set())
    return sorted(set(NATIVE_BF16_FLAGS) & flags)


def step_seconds(threads: int, channels_last: bool, bf16: bool, args: argparse.Namespace) -> float:
    """Seconds per training step after two untimed warm-up steps."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    network = UNet2D(1, 2, features=args.features, norm="batch").to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(network.parameters(), 1e-3)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    images = torch.rand(args.batch, 1, args.size, args.size).to(memory_format=memory_format)
    labels = (torch.rand(args.batch, 1, args.size, args.size) > 0.9).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = network(images)
        loss_function(logits.float(), labels).backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="crop size the recipe trains on")
    parser.add_argument("--features", type=int, nargs=5, default=[16, 32, 64, 128, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    native_bf16 = cpu_bf16_flags()
    cores = os.cpu_count() or 1
    combos = list(itertools.product(sorted({1, cores}), (False, True), (False, True) if native_bf16 else (False,)))
    best: dict[tuple, float] = {}
    for _ in range(args.rounds):
        for combo in combos:
            seconds = step_seconds(*combo, args)
            best[combo] = min(best.get(combo, float("inf")), seconds)
    baseline = best[(1, False, False)]
    results = [
        {
            "threads": threads,
            "channels_last": channels_last,
            "bf16": bf16,
            "images_per_s": round(args.batch / seconds, 1),
            "vs_1_thread_fp32_contiguous": round(baseline / seconds, 2),
        }
        for (threads, channels_last, bf16), seconds in best.items()
    ]
    print(
        json.dumps(
            {
                "benchmark": "cpu_levers",
                "size": args.size,
                "features": args.features,
                "batch": args.batch,
                "native_bf16_flags": native_bf16 or None,
                "bf16": "timed" if native_bf16 else "skipped: no native bf16 on this processor",
                "results": results,
                **run_environment(),
            }
        )
    )


if __name__ == "__main__":
    main()
