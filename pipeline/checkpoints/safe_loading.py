"""Load checkpoints without running code from them: tensors and plain containers only."""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from pipeline.checkpoints.resume import ResumeError


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds pickled Python objects other than tensors and plain containers."""


def unsafe_checkpoint_message(path: str | os.PathLike) -> str:
    """The one-line refusal for ``path``, shared by every loader."""
    return (
        f"{path}: refused: the checkpoint holds pickled Python objects besides tensors, numbers and strings, "
        "and unpickling them could run arbitrary code; load only checkpoints written by this pipeline, or "
        "share models as TorchScript/ONNX exports"
    )


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)``, refusing pickled objects with ``UnsafeCheckpointError``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(unsafe_checkpoint_message(path)) from error


class SafeCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` with one-line refusals for unsafe checkpoints and for finished trainings.

    MONAI 1.6 already loads with ``torch.load(weights_only=True)``; torch's refusal of a pickled object is a
    long message about allow-lists. This loader turns it into ``UnsafeCheckpointError`` naming the file. It also
    refuses a training checkpoint that already reached the engine's ``max_epochs``, where ignite would
    otherwise silently start the training again from epoch 0. Arguments are those of ``CheckpointLoader``.
    """

    def __call__(self, engine: Engine) -> None:
        try:
            super().__call__(engine)
        except pickle.UnpicklingError as error:
            raise UnsafeCheckpointError(unsafe_checkpoint_message(self.load_path)) from error
        state = engine.state
        if state.max_epochs is not None and 0 < state.max_epochs <= state.epoch:
            raise ResumeError(
                f"{self.load_path}: this training already finished its {state.epoch} epochs; "
                f"to train further, raise the epoch count above {state.epoch} (e.g. --epochs {state.epoch + 10})"
            )
