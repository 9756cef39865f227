"""Phantom slices for the benchmarks: figshare ``.mat`` files made on the fly, listed as bundle datalist entries."""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipeline.phantoms.slices import synthesize_dataset

SLICES_PER_PATIENT = 4


def phantom_datalist(folder: str | os.PathLike, count: int, size: int = 512, seed: int = 0) -> list[dict[str, str]]:
    """Write at least ``count`` phantom slices of ``size`` px into ``folder``; one ``{image, label}`` entry each.

    Image and mask live in the same ``.mat`` file (the bundle's readers pick the field), as in the real data.
    """
    patients = max(1, math.ceil(count / SLICES_PER_PATIENT))
    files = synthesize_dataset(
        Path(folder), patients=patients, slices_per_patient=SLICES_PER_PATIENT, size=size, seed=seed
    )
    return [{"image": str(path), "label": str(path)} for path in files[:count]]
