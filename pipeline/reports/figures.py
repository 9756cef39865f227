"""Figures people look at instead of reading numbers: learning curves, Dice box plots, overlays."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_learning_curve(rows: Sequence[Mapping[str, float]], path: str | os.PathLike) -> None:
    """Plot training loss and every validation metric found in ``rows`` (one mapping per epoch) against epochs."""
    epochs = [row["epoch"] for row in rows]
    metric_names = sorted({key for row in rows for key in row if key.startswith("val_")})
    fig, axes = plt.subplots(1, 1 + len(metric_names), figsize=(4.5 * (1 + len(metric_names)), 3.6), squeeze=False)
    axes = axes[0]
    axes[0].plot(epochs, [row.get("train_loss", np.nan) for row in rows], marker=".", color="tab:blue")
    axes[0].set_title("training loss (DiceCE)")
    for axis, name in zip(axes[1:], metric_names):
        points = [(row["epoch"], row[name]) for row in rows if name in row and np.isfinite(row[name])]
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, marker="o", color="tab:green" if "dice" in name else "tab:red")
        axis.set_title(name.replace("_", " "))
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    _save(fig, path)


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: str | os.PathLike) -> None:
    """One column per run (e.g. per cross-validation fold): training loss above, validation Dice below."""
    fig, axes = plt.subplots(2, len(curves), figsize=(3.6 * len(curves), 5.6), squeeze=False, sharey="row")
    for column, (name, rows) in enumerate(curves.items()):
        axes[0, column].plot([row["epoch"] for row in rows], [row.get("train_loss", np.nan) for row in rows])
        axes[0, column].set_title(f"{name}: training loss")
        points = [(row["epoch"], row["val_mean_dice"]) for row in rows if np.isfinite(row.get("val_mean_dice", np.nan))]
        if points:
            axes[1, column].plot(*zip(*points), marker="o", color="tab:green")
        axes[1, column].set_title(f"{name}: validation Dice")
        axes[1, column].set_xlabel("epoch")
    for axis in axes.flat:
        axis.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_dice_boxplot(dice_by_group: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str) -> None:
    """Draw one Dice box plot per group (tumour type), with the individual slices as dots."""
    names = list(dice_by_group)
    fig, axis = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4))
    values = [np.asarray(dice_by_group[name], dtype=float) for name in names]
    axis.boxplot(values, showfliers=False)
    axis.set_xticks(range(1, len(names) + 1), [f"{name}\n(n={len(v)})" for name, v in zip(names, values)])
    rng = np.random.default_rng(0)
    for position, v in enumerate(values, start=1):
        axis.scatter(position + rng.uniform(-0.12, 0.12, len(v)), v, s=8, alpha=0.5, color="tab:blue")
    axis.set_ylim(-0.02, 1.02)
    axis.set_ylabel("Dice")
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_overlays(cases: Sequence[Mapping[str, object]], path: str | os.PathLike) -> None:
    """Show each case's image with the reference outline (green) and the predicted outline (red).

    Each case maps ``image`` (2D uint8, display orientation), ``label`` and ``pred`` (2D bool) and ``title``.
    """
    fig, axes = plt.subplots(1, len(cases), figsize=(4 * len(cases), 4.3), squeeze=False)
    for axis, case in zip(axes[0], cases):
        axis.imshow(case["image"], cmap="gray")
        axis.contour(case["label"], levels=[0.5], colors="lime", linewidths=1.2)
        if np.any(case["pred"]):
            axis.contour(case["pred"], levels=[0.5], colors="red", linewidths=1.2)
        axis.set_title(str(case["title"]), fontsize=9)
        axis.axis("off")
    fig.suptitle("green: reference   red: prediction", fontsize=9)
    _save(fig, path)


def plot_mask_over_slices(
    slices: np.ndarray,
    mask: np.ndarray,
    path: str | os.PathLike,
    titles: Sequence[str],
    title: str = "",
    reference: np.ndarray | None = None,
) -> None:
    """Show each slice of ``slices`` (n, rows, cols; display orientation) with the outline of ``mask`` (red) and,
    where given, of the ``reference`` mask (green)."""
    columns = min(len(slices), 4)
    rows = -(-len(slices) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    references = np.zeros_like(mask) if reference is None else reference
    for axis, image, outline, truth, name in zip(axes.flat, slices, mask, references, titles):
        low, high = np.percentile(image, [0.5, 99.5])
        axis.imshow(image, cmap="gray", vmin=low, vmax=high)
        if np.any(truth):
            axis.contour(truth, levels=[0.5], colors="lime", linewidths=1.0)
        if np.any(outline):
            axis.contour(outline, levels=[0.5], colors="red", linewidths=1.0)
        axis.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
