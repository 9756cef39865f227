"""Per-slice segmentation results summarised per tumour type and per patient (CSV, JSON, figures)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import write_text_atomic
from pipeline.reports.figures import plot_dice_boxplot, plot_overlays


@dataclass(frozen=True)
class SliceResult:
    """The metrics of one evaluated slice and what identifies it."""

    slice_id: str
    filename: str
    pid: str
    tumor_type_name: str
    dice: float
    hd95: float


def summarize(results: Sequence[SliceResult], group_by: str) -> dict[str, dict[str, float]]:
    """Return n, mean/median/std Dice and mean/median HD95 for every value of ``group_by`` (e.g. ``pid``).

    HD95 is undefined (NaN) for a slice where nothing was predicted; such slices count in ``n_no_prediction``
    and are left out of the HD95 statistics.
    """
    groups: dict[str, list[SliceResult]] = defaultdict(list)
    for result in results:
        groups[str(getattr(result, group_by))].append(result)
    return {name: _statistics(members) for name, members in sorted(groups.items())}


def _statistics(results: Sequence[SliceResult]) -> dict[str, float]:
    dice = np.array([r.dice for r in results], dtype=float)
    hd95 = np.array([r.hd95 for r in results], dtype=float)
    finite_hd = hd95[np.isfinite(hd95)]
    return {
        "n": len(results),
        "dice_mean": float(np.mean(dice)),
        "dice_median": float(np.median(dice)),
        "dice_std": float(np.std(dice)),
        "hd95_mean": float(np.mean(finite_hd)) if finite_hd.size else math.nan,
        "hd95_median": float(np.median(finite_hd)) if finite_hd.size else math.nan,
        "n_no_prediction": int(np.sum(~np.isfinite(hd95))),
    }


def _csv_text(rows: Sequence[Mapping[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_evaluation_report(
    results: Sequence[SliceResult], overlays: Mapping[str, Mapping[str, np.ndarray]], output_dir: str | os.PathLike
) -> dict[str, object]:
    """Write the per-slice, per-type and per-patient tables, ``summary.json`` and the figures; return the summary.

    ``overlays`` maps a slice id to its ``image``/``label``/``pred`` arrays (display orientation) and is used
    to draw the best, median and worst slices.
    """
    output_dir = Path(output_dir)
    if not results:
        raise ValueError(f"no slices were evaluated: nothing to report in {output_dir}")
    per_type = summarize(results, "tumor_type_name")
    per_patient = summarize(results, "pid")
    summary = {"overall": _statistics(results), "per_tumor_type": per_type, "per_patient": per_patient}

    write_text_atomic(output_dir / "per_slice.csv", _csv_text([asdict(r) for r in results]))
    write_text_atomic(
        output_dir / "per_tumor_type.csv", _csv_text([{"tumor_type": k, **v} for k, v in per_type.items()])
    )
    write_text_atomic(output_dir / "per_patient.csv", _csv_text([{"pid": k, **v} for k, v in per_patient.items()]))
    write_text_atomic(output_dir / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")

    plot_dice_boxplot(
        {name: [r.dice for r in results if r.tumor_type_name == name] for name in per_type},
        output_dir / "dice_by_tumor_type.png",
        title=f"Dice per slice (mean {summary['overall']['dice_mean']:.3f})",
    )
    ranked = sorted(results, key=lambda r: r.dice)
    picks = {"best": ranked[-1], "median": ranked[len(ranked) // 2], "worst": ranked[0]}
    plot_overlays(
        [
            {**overlays[r.slice_id], "title": f"{rank}: {r.slice_id} ({r.tumor_type_name}) Dice {r.dice:.3f}"}
            for rank, r in picks.items()
            if r.slice_id in overlays
        ],
        output_dir / "overlays_best_median_worst.png",
    )
    return summary
