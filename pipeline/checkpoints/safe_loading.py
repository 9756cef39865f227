"""Load checkpoints without running code from them: tensors and plain containers only."""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from pipeline.checkpoints.resume import ResumeError, find_latest_checkpoint
from pipeline.user_errors import UserError

# What torch.load raises for a file it cannot read: pickled objects, an empty file, a truncated archive.
LOAD_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, OSError)


class UnsafeCheckpointError(UserError, ValueError):
    """A checkpoint that holds pickled Python objects other than tensors and plain containers."""


class MissingCheckpointError(UserError, FileNotFoundError):
    """No checkpoint where the config expects the trained weights."""


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint whose weights do not fit the network the config builds."""


class DamagedCheckpointError(UserError, ValueError):
    """A weights file that is empty, truncated or damaged: not a checkpoint torch can read."""


def weights_mismatch(expected: dict[str, torch.Tensor], state: dict[str, Any]) -> str | None:
    """The first key that ``state`` lacks, adds, or holds at another shape than ``expected``; ``None`` if it fits."""
    for key, tensor in expected.items():
        if key not in state:
            return f"the checkpoint lacks {key!r} of the configured network"
        if tuple(state[key].shape) != tuple(tensor.shape):
            return (
                f"{key!r} has shape {list(state[key].shape)} in the checkpoint but {list(tensor.shape)} in the "
                "configured network"
            )
    extra = sorted(set(state) - set(expected))
    return f"the checkpoint has {extra[0]!r}, unknown to the configured network" if extra else None


def require_checkpoint(path: str | os.PathLike) -> None:
    """Raise ``MissingCheckpointError`` naming ``path`` and the ways to get trained weights when it is no file."""
    if not os.path.isfile(path):
        raise MissingCheckpointError(
            f"{path}: no trained weights here; train them (python -m pipeline train), fetch the released ones "
            "(python -m pipeline fetch-weights), or point --ckpt-dir at a folder holding model.pt"
        )


class TorchScriptCheckpointError(UserError, ValueError):
    """A TorchScript model where a checkpoint of weights is expected."""


def refuse_torchscript(path: str | os.PathLike) -> None:
    """Raise ``TorchScriptCheckpointError`` when ``path`` is a TorchScript archive (a zip holding ``code/``)."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        scripted = any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    if scripted:
        raise TorchScriptCheckpointError(
            f"{path}: a TorchScript model, not a checkpoint of weights; run it with configs/inference_torchscript.json "
            "(it loads models/model.ts), or point --ckpt-dir at the folder holding the model.pt that training wrote"
        )


def verify_checkpoint(path: str | os.PathLike, network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Check, before any engine runs, that ``path`` holds weights that load safely into ``network``, and return
    them (the state dict, on the CPU).

    Raises ``MissingCheckpointError``, ``TorchScriptCheckpointError``, ``UnsafeCheckpointError``,
    ``DamagedCheckpointError`` or ``CheckpointMismatchError``, each one line naming the file: refused inside a
    running engine, ignite and MONAI's handlers would each log the same fault with a traceback first.
    """
    require_checkpoint(path)
    checkpoint = load_checkpoint(path, map_location="cpu")
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    problem = weights_mismatch(network.state_dict(), state) if isinstance(state, dict) else "it holds no state dict"
    if problem:
        raise CheckpointMismatchError(
            f"{path}: does not fit the configured network: {problem}; use the model_config.json written beside it "
            "by training, or the network overrides it was trained with"
        )
    return state


def unsafe_checkpoint_message(path: str | os.PathLike) -> str:
    """The one-line refusal for ``path``, shared by every loader."""
    return (
        f"{path}: refused: the checkpoint holds pickled Python objects besides tensors, numbers and strings, "
        "and unpickling them could run arbitrary code; load only checkpoints written by this pipeline, or "
        "share models as TorchScript/ONNX exports"
    )


def damage_of(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a checkpoint as ``torch.save`` writes it (a zip archive): empty, or an archive whose
    end is missing or damaged; ``None`` when it is a complete archive."""
    if os.path.getsize(path) == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return "truncated or damaged: not the complete zip archive torch.save writes"
    return None


def load_refusal(path: str | os.PathLike, error: Exception) -> UserError | None:
    """The one-line refusal of ``path`` for ``error``, raised by ``torch.load`` of it, or ``None`` when the error
    is of another kind (an unreadable folder, a device the tensors cannot be mapped to)."""
    if isinstance(error, (FileNotFoundError, PermissionError)):
        return None
    if (damage := damage_of(path)) is not None:
        return DamagedCheckpointError(
            f"{path}: not a complete PyTorch checkpoint ({damage}); fetch the released weights again "
            "(python -m pipeline fetch-weights), or train them (python -m pipeline train)"
        )
    if isinstance(error, pickle.UnpicklingError):
        return UnsafeCheckpointError(unsafe_checkpoint_message(path))
    return None


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)``, refusing pickled objects with ``UnsafeCheckpointError``, an empty,
    truncated or damaged file with ``DamagedCheckpointError`` and a TorchScript archive with
    ``TorchScriptCheckpointError``."""
    refuse_torchscript(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except LOAD_ERRORS as error:
        if (refusal := load_refusal(path, error)) is not None:
            raise refusal from error
        raise


class SafeCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` with one-line refusals for unsafe checkpoints and for finished trainings.

    MONAI 1.6 already loads with ``torch.load(weights_only=True)``; torch's refusal of a pickled object is a
    long message about allow-lists. This loader turns it into ``UnsafeCheckpointError`` naming the file, and an
    empty or truncated file into ``DamagedCheckpointError``. It also refuses a training checkpoint that already
    reached the engine's ``max_epochs``, where ignite would otherwise silently start the training again from
    epoch 0. Arguments are those of ``CheckpointLoader``.
    """

    def __call__(self, engine: Engine) -> None:
        require_checkpoint(self.load_path)
        refuse_torchscript(self.load_path)
        try:
            super().__call__(engine)
        except LOAD_ERRORS as error:
            if (refusal := load_refusal(self.load_path, error)) is not None:
                raise refusal from error
            if isinstance(error, RuntimeError):
                self._raise_mismatch(error)
            raise
        state = engine.state
        if state.max_epochs is not None and 0 < state.max_epochs <= state.epoch:
            raise ResumeError(
                f"{self.load_path}: this training already finished its {state.epoch} epochs; "
                f"to train further, raise the epoch count above {state.epoch} (e.g. --epochs {state.epoch + 10})"
            )

    def _raise_mismatch(self, error: RuntimeError) -> None:
        """Turn torch's list of missing, unexpected and resized keys into one line naming both shapes."""
        try:
            checkpoint = load_checkpoint(self.load_path, map_location="cpu")
        except Exception:  # not a readable checkpoint at all: torch's own error says more than a comparison could
            return
        for name, obj in self.load_dict.items():
            if not isinstance(obj, torch.nn.Module):
                continue
            state = checkpoint.get(name, checkpoint)  # MONAI's loader takes a bare state dict for one object
            problem = weights_mismatch(obj.state_dict(), state) if isinstance(state, dict) else None
            if problem:
                raise CheckpointMismatchError(
                    f"{self.load_path}: does not fit the configured network: {problem}; use the model_config.json "
                    "written beside it by training, or the network overrides it was trained with"
                ) from error


class LatestCheckpointLoader(SafeCheckpointLoader):
    """``SafeCheckpointLoader`` of the newest ``latest_checkpoint_epoch=N.pt`` in ``ckpt_dir``, looked up when it runs.

    Building it needs no checkpoint, so ``train.json`` declares it unconditionally and calls it only when
    resuming (``"$@resume and @resume_loader(@train#trainer)"``). Other arguments are those of ``CheckpointLoader``.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, load_dict: dict, **kwargs: Any) -> None:
        super().__init__(load_path=str(ckpt_dir), load_dict=load_dict, **kwargs)
        self.ckpt_dir = ckpt_dir

    def __call__(self, engine: Engine) -> None:
        self.load_path = find_latest_checkpoint(self.ckpt_dir)
        super().__call__(engine)
