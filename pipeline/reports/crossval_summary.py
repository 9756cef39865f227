"""The cross-validation table: every slice scored by the fold model that never trained on its patient.

Each fold's ``validation/per_slice.csv`` (written by ``evaluate``) is read back; the figures are given per fold
and pooled over all folds, per tumour type and overall, per slice and per patient, as nnU-Net's summary gives
them. Written beside the folds: ``crossval_per_slice.csv``, ``crossval_summary.json``, ``crossval_summary.md``
and ``crossval_learning_curves.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_text_atomic
from pipeline.reports.figures import plot_learning_curves
from pipeline.training.crossval import FoldPaths

POOLED = "pooled"
SUMMARY_JSON, SUMMARY_MD = "crossval_summary.json", "crossval_summary.md"
PER_SLICE_CSV, CURVES_PNG = "crossval_per_slice.csv", "crossval_learning_curves.png"


def read_fold_slices(fold: FoldPaths) -> list[dict[str, Any]]:
    """The per-slice rows ``evaluate`` wrote for the fold, each with its ``fold`` and numeric ``dice``/``hd95``."""
    with open(fold.validation / "per_slice.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{"fold": fold.fold, **row, "dice": float(row["dice"]), "hd95": float(row["hd95"])} for row in rows]


def group_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Slices, patients, Dice mean and median, HD95 median and slices without a prediction of ``rows``; the
    patient figures average each patient's slices first, so a patient with many slices counts once."""
    dice = np.array([row["dice"] for row in rows], dtype=float)
    hd95 = np.array([row["hd95"] for row in rows], dtype=float)
    finite = hd95[np.isfinite(hd95)]
    by_patient: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_patient[str(row["pid"])].append(float(row["dice"]))
    patient_dice = np.array([np.mean(values) for values in by_patient.values()], dtype=float)
    return {
        "slices": len(rows),
        "patients": len(by_patient),
        "dice_mean": float(dice.mean()) if dice.size else math.nan,
        "dice_median": float(np.median(dice)) if dice.size else math.nan,
        "hd95_median": float(np.median(finite)) if finite.size else math.nan,
        "no_prediction": int(np.sum(~np.isfinite(hd95))),
        "patient_dice_mean": float(patient_dice.mean()) if patient_dice.size else math.nan,
        "patient_dice_median": float(np.median(patient_dice)) if patient_dice.size else math.nan,
    }


def crossval_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{fold or "pooled": {tumour type or "all": figures}}`` of the per-slice ``rows`` of every fold."""
    scopes: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        scopes[f"fold_{row['fold']}"].append(row)
        scopes[POOLED].append(row)
    table = {}
    for scope, members in sorted(scopes.items()):
        types: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in members:
            types[row["tumor_type_name"]].append(row)
        table[scope] = {name: group_figures(types[name]) for name in sorted(types)}
        table[scope]["all"] = group_figures(members)
    return table


def format_table(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The table as Markdown: one row per fold (and pooled) and tumour type."""
    lines = [
        "| scope | tumour type | slices | patients | Dice mean | Dice median | HD95 median (px) | no prediction "
        "| patient Dice mean |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scope, types in table.items():
        for name, figures in types.items():
            hd95 = "n/a" if math.isnan(figures["hd95_median"]) else f"{figures['hd95_median']:.1f}"
            lines.append(
                f"| {scope.replace('_', ' ')} | {name} | {figures['slices']} | {figures['patients']} "
                f"| {figures['dice_mean']:.3f} | {figures['dice_median']:.3f} | {hd95} | {figures['no_prediction']} "
                f"| {figures['patient_dice_mean']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def write_crossval_summary(root: Path, folds: Sequence[FoldPaths]) -> dict[str, Any]:
    """Write the summary files of the scored ``folds`` into ``root``; return the table.

    Folds not scored yet are left out and named in the summary, so a partial run still reports what it has.
    """
    scored = [fold for fold in folds if fold.scored]
    rows = [row for fold in scored for row in read_fold_slices(fold)]
    table = crossval_table(rows)
    summary = {
        "folds_scored": [fold.fold for fold in scored],
        "folds_missing": [fold.fold for fold in folds if not fold.scored],
        "model": "each fold's final-epoch weights (fold_K/final/model.pt), scored on fold K only",
        "table": table,
    }
    write_text_atomic(root / SUMMARY_JSON, json.dumps(_json_safe(summary), indent=2) + "\n")
    missing = f" (folds not scored yet: {summary['folds_missing']})" if summary["folds_missing"] else ""
    write_text_atomic(root / SUMMARY_MD, f"# Cross-validation{missing}\n\n" + format_table(table))
    if rows:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(root / PER_SLICE_CSV, buffer.getvalue())
    curves = {f"fold {fold.fold}": fold.training_output / "learning_curve.csv" for fold in folds}
    curves = {name: path for name, path in curves.items() if path.is_file()}
    if curves:
        plot_learning_curves({name: _read_curve(path) for name, path in curves.items()}, root / CURVES_PNG)
    return summary


def _read_curve(path: Path) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)]


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
