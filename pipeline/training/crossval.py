"""Cross-validation over the dataset author's patient-wise folds, nnU-Net style, with every step resumable.

Fold K validates and the other folds train. Each fold lives in its own folder below the run folder::

    fold_K/datalist.json      fold K as the validation list, the others as the training list (``prepare``)
    fold_K/models/            the training's checkpoints (``ckpt_dir``): best model.pt, latest state, definition
    fold_K/eval/              the training's learning curve (``output_dir``)
    fold_K/final/             the final epoch's weights and their definition: the fold's model
    fold_K/validation/        that model scored on fold K by ``evaluate`` (per slice, type and patient)

The fold's model is the last epoch's, not the epoch that scored best on fold K: choosing an epoch on the very
slices the fold is scored on would flatter the cross-validation figures. A stopped run resumes from its latest
checkpoint; a fold whose ``final`` and ``validation`` exist is done and left alone.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_path
from pipeline.checkpoints import MODEL_CONFIG_FILE, latest_checkpoints, load_checkpoint
from pipeline.data.datalist import DATALIST_NAME

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class FoldPaths:
    """The folders of fold ``fold`` below the cross-validation folder ``root``."""

    root: Path
    fold: int

    @property
    def folder(self) -> Path:
        return self.root / f"fold_{self.fold}"

    @property
    def datalist(self) -> Path:
        return self.folder / DATALIST_NAME

    @property
    def checkpoints(self) -> Path:
        return self.folder / "models"

    @property
    def training_output(self) -> Path:
        return self.folder / "eval"

    @property
    def model_dir(self) -> Path:
        return self.folder / "final"

    @property
    def validation(self) -> Path:
        return self.folder / "validation"

    @property
    def trained(self) -> bool:
        """The fold's model has been extracted from its finished training."""
        return (self.model_dir / MODEL_FILE).is_file() and (self.model_dir / MODEL_CONFIG_FILE).is_file()

    @property
    def scored(self) -> bool:
        """The fold's model has been scored on its validation fold."""
        return (self.validation / "per_slice.csv").is_file() and (self.validation / "summary.json").is_file()


def fold_paths(root: str | Path, folds: Sequence[int]) -> list[FoldPaths]:
    """The :class:`FoldPaths` of ``folds`` below ``root``."""
    return [FoldPaths(Path(root), int(fold)) for fold in folds]


def extract_final_model(fold: FoldPaths) -> Path:
    """Write the weights of the fold's last training epoch, with their definition, to ``fold.model_dir``.

    They are read from the newest latest checkpoint (which holds the whole training state) into a checkpoint of
    the model alone, as the bundle's ``model.pt`` is saved. Returns the written ``model.pt``.
    """
    found = latest_checkpoints(fold.checkpoints)
    if not found:
        raise FileNotFoundError(f"{fold.checkpoints}: no latest checkpoint to take the fold's final weights from")
    state = load_checkpoint(found[-1], map_location="cpu")
    fold.model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fold.checkpoints / MODEL_CONFIG_FILE, fold.model_dir / MODEL_CONFIG_FILE)
    target = fold.model_dir / MODEL_FILE
    with atomic_path(target) as tmp:
        torch.save({"model": state["model"]}, tmp)
    return target


def run_crossval(
    folds: Sequence[FoldPaths],
    train: Callable[[FoldPaths, bool], None],
    evaluate: Callable[[FoldPaths], None],
    epochs: int,
) -> None:
    """Train, extract and score each fold in turn, resuming wherever an earlier run stopped.

    ``train(fold, resume)`` runs the fold's training (``resume``: continue from its latest checkpoint);
    ``evaluate(fold)`` scores ``fold.model_dir`` on the fold's validation list. ``epochs`` is the length of a
    finished training: a fold whose latest checkpoint has reached it is extracted without training again.
    """
    for fold in folds:
        if not fold.trained:
            found = latest_checkpoints(fold.checkpoints)
            done = found and _epoch_of(found[-1]) >= epochs
            if not done:
                logger.info("fold %d: %s training", fold.fold, "resuming" if found else "starting")
                train(fold, bool(found))
            extract_final_model(fold)
        if not fold.scored:
            logger.info("fold %d: scoring the final model on fold %d", fold.fold, fold.fold)
            evaluate(fold)


def _epoch_of(checkpoint: Path) -> int:
    return int(checkpoint.stem.rsplit("=", 1)[1])


def fold_overrides(fold: FoldPaths, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle overrides of the fold's training: its datalist, checkpoint and output folders."""
    return {
        **overrides,
        "dataset_dir": str(fold.folder.resolve()),
        "ckpt_dir": str(fold.checkpoints.resolve()),
        "output_dir": str(fold.training_output.resolve()),
    }
