"""Cross-validation over the dataset author's patient-wise folds, nnU-Net style, with every step resumable.

Fold K validates and the other folds train. Each fold lives in its own folder below the run folder::

    fold_K/datalist.json      fold K as the validation list, the others as the training list (``prepare``)
    fold_K/models/            the training's checkpoints (``ckpt_dir``): best model.pt, latest state, definition
    fold_K/eval/              the training's learning curve (``output_dir``) and TensorBoard log (``tensorboard/``)
    fold_K/final/             the final epoch's weights and their definition: the fold's model
    fold_K/validation/        that model scored on fold K by ``evaluate`` (per slice, type and patient)

The fold's model is the last epoch's, not the epoch that scored best on fold K: choosing an epoch on the very
slices the fold is scored on would flatter the cross-validation figures. A stopped run resumes from its latest
checkpoint; a fold whose ``final`` and ``validation`` exist is done and left alone. A folder a fold writes into that
is a link or lies below one is refused (``own_subfolder``), and files are written atomically (a link planted on a
file is replaced, never followed), so a link planted in the run folder never leads the fold's files onto others.
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
from pipeline.outputs import own_subfolder

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CHECKPOINT_DIR = "models"
TRAINING_OUTPUT_DIR = "eval"
TENSORBOARD_DIR = "tensorboard"  # below the training output: the bundle's ``log_dir`` (train.json)
MODEL_DIR = "final"
VALIDATION_DIR = "validation"
# Every folder of a fold that the fold's training, extraction and scoring write into, below ``fold_K``.
WRITTEN_FOLDERS = (
    (CHECKPOINT_DIR,),
    (TRAINING_OUTPUT_DIR,),
    (TRAINING_OUTPUT_DIR, TENSORBOARD_DIR),
    (MODEL_DIR,),
    (VALIDATION_DIR,),
)


@dataclass(frozen=True)
class FoldPaths:
    """The folders of fold ``fold`` below the cross-validation folder ``root``, each refused (``own_subfolder``)
    when it is a link, lies below one or is a file."""

    root: Path
    fold: int

    @property
    def name(self) -> str:
        return f"fold_{self.fold}"

    @property
    def folder(self) -> Path:
        return own_subfolder(self.root, self.name)

    @property
    def datalist(self) -> Path:
        return self.folder / DATALIST_NAME

    @property
    def checkpoints(self) -> Path:
        return own_subfolder(self.root, self.name, CHECKPOINT_DIR)

    @property
    def training_output(self) -> Path:
        return own_subfolder(self.root, self.name, TRAINING_OUTPUT_DIR)

    @property
    def model_dir(self) -> Path:
        return own_subfolder(self.root, self.name, MODEL_DIR)

    @property
    def validation(self) -> Path:
        return own_subfolder(self.root, self.name, VALIDATION_DIR)

    def require_own_folders(self) -> None:
        """Refuse, with ``UnsafeOutputPathError`` in one line naming it, a fold folder or a folder the fold writes
        into that is a link, lies below one or is a file: the fold's files would land wherever it leads."""
        for parts in WRITTEN_FOLDERS:
            own_subfolder(self.root, self.name, *parts)

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
    with atomic_path(fold.model_dir / MODEL_CONFIG_FILE) as tmp:  # replaces a link planted there, never follows it
        shutil.copyfile(fold.checkpoints / MODEL_CONFIG_FILE, tmp)
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
        fold.require_own_folders()  # again before each fold: the folds before it ran for hours
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
