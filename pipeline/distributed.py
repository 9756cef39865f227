"""Data-parallel training over several processes: launching through ``torch.distributed.run`` and auditing shards.

``python -m pipeline train --gpus N`` re-runs the same command in N worker processes with
``torch.distributed.run``; each worker sees ``WORLD_SIZE`` > 1 in its environment and adds the bundle's
``multi_gpu_train.json`` override to its configs. Several nodes are started with ``torchrun`` directly
(see ``docs/multi_gpu.md``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import write_text_atomic

MULTI_GPU_TRAIN_CONFIG = "multi_gpu_train.json"


def process_rank() -> int:
    """This process's rank in a ``torch.distributed.run`` job, 0 outside one."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The number of processes of the current ``torch.distributed.run`` job, 1 outside one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_process_group(device: torch.device) -> torch.distributed.ProcessGroup:
    """Join the default process group of this worker (NCCL for a CUDA ``device``, gloo otherwise) and return it.

    ``multi_gpu_train.json`` passes it to ``DistributedDataParallel`` as its ``process_group``, so the group
    exists before the network that needs it is built; ``multi_gpu_evaluate.json`` calls it from ``initialize``.
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.group.WORLD


def with_multi_gpu_config(config_names: Sequence[str], multi_gpu_config: str = MULTI_GPU_TRAIN_CONFIG) -> list[str]:
    """``config_names`` followed by ``multi_gpu_config`` when this process is one of several workers."""
    names = list(config_names)
    return names + [multi_gpu_config] if world_size() > 1 else names


def worker_argv(argv: Sequence[str], option: str = "--gpus") -> list[str]:
    """``argv`` without ``option`` and its value (``--gpus 2`` or ``--gpus=2``): what each worker runs."""
    kept: list[str] = []
    items = iter(argv)
    for item in items:
        if item == option:
            next(items, None)
        elif not item.startswith(f"{option}="):
            kept.append(item)
    return kept


def launch_command(nproc_per_node: int, argv: Sequence[str]) -> list[str]:
    """The command that runs ``python -m pipeline <argv>`` in ``nproc_per_node`` workers on this machine."""
    if nproc_per_node < 1:
        raise ValueError(f"--gpus must be at least 1, got {nproc_per_node}")
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}"]
    return [*runner, "-m", "pipeline", *argv]


def launch(nproc_per_node: int, argv: Sequence[str]) -> int:
    """Run ``python -m pipeline <argv>`` in ``nproc_per_node`` workers and return the job's exit code.

    ``argv`` is the worker's command line without the launch option (``--gpus``). ``--standalone`` lets
    ``torch.distributed.run`` pick a free rendezvous port, so several jobs can share a machine.
    """
    return subprocess.run(launch_command(nproc_per_node, argv), check=False).returncode


def write_partition(entries: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike, rank: int) -> Path:
    """Write the datalist entries that worker ``rank`` trains on to ``<output_dir>/partition_rank<rank>.json``.

    Each worker caches and trains on its own shard of the training set; the files show which slices went where.
    """
    path = Path(output_dir) / f"partition_rank{rank}.json"
    write_text_atomic(path, json.dumps([dict(entry) for entry in entries], indent=1, default=str) + "\n")
    return path
