"""Score the PNG masks ``infer`` wrote against PNG ground truth: the mean Dice over the slices, and per tumour type.

    python -m pipeline infer --input ../shared/data/figshare-sample/images --output runs/sample --format png \\
        --no-overlays --device cpu
    python benchmarks/score_masks.py --truth ../shared/data/figshare-sample --masks runs/sample

``--truth`` holds ``masks/<index>.png`` and a ``meta.csv`` with ``index`` and ``label_name`` columns (the layout of
the figshare PNG conversion); ``--masks`` holds ``<index>_seg.png``. A slice where both masks are empty scores 1.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """The Dice coefficient of two boolean masks; 1 when both are empty."""
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(prediction, truth).sum() / total)


def score(truth_dir: Path, masks_dir: Path) -> dict[str, object]:
    """The number of slices, their mean Dice and the mean Dice per tumour type."""
    by_type: dict[str, list[float]] = defaultdict(list)
    with open(truth_dir / "meta.csv", newline="") as table:
        for row in csv.DictReader(table):
            truth = np.asarray(Image.open(truth_dir / "masks" / f"{row['index']}.png")) > 0
            prediction = np.asarray(Image.open(masks_dir / f"{row['index']}_seg.png")) > 0
            by_type[row["label_name"]].append(dice(prediction, truth))
    scores = [value for values in by_type.values() for value in values]
    per_type = {name: round(float(np.mean(values)), 3) for name, values in sorted(by_type.items())}
    return {"slices": len(scores), "mean_dice": round(float(np.mean(scores)), 3), "per_type": per_type}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", type=Path, required=True, help="folder with masks/ and meta.csv")
    parser.add_argument("--masks", type=Path, required=True, help="folder of <index>_seg.png masks from infer")
    args = parser.parse_args()
    print(json.dumps(score(args.truth, args.masks)))


if __name__ == "__main__":
    main()
