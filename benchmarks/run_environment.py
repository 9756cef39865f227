"""What every benchmark line records about the run: library versions, machine and torch threads."""

from __future__ import annotations

import platform
import sys

import monai
import torch


def run_environment() -> dict[str, object]:
    """Versions of torch, MONAI and Python, the machine type and torch's CPU thread count."""
    return {
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }
