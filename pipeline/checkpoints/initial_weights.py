"""The trained weights a training starts from when it fine-tunes a model instead of starting afresh."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pipeline.checkpoints.model_config import MODEL_CONFIG_FILE, read_model_config
from pipeline.checkpoints.safe_loading import (
    CheckpointMismatchError,
    load_checkpoint,
    require_checkpoint,
    weights_mismatch,
)
from pipeline.networks.ensemble import ENSEMBLE_TARGET, member_state
from pipeline.user_errors import UserError


class InitialWeightsError(UserError, ValueError):
    """A fold chosen for weights that are no fold ensemble, or a fold ensemble without the fold to start from."""


def initial_weights(path: str | os.PathLike, fold: int | None = None) -> dict[str, torch.Tensor]:
    """The weights in the checkpoint ``path`` (on the CPU), read tensors-only: a model's ``model.pt``, a latest
    training checkpoint, or, with ``fold``, one member of a fold ensemble (as ``model_config.json`` beside it
    defines it, e.g. the bundle's shipped ``models/model.pt``).

    Raises ``MissingCheckpointError`` or ``UnsafeCheckpointError`` for the file, and ``InitialWeightsError`` for a
    fold ensemble without ``fold`` (or without that fold) and for a ``fold`` of a single network.
    """
    require_checkpoint(path)
    checkpoint = load_checkpoint(path, map_location="cpu")
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else {}
    definition = (read_model_config(Path(path).parent) or {}).get("network_def", {})
    if not isinstance(definition, dict) or definition.get("_target_") != ENSEMBLE_TARGET:
        if fold is not None:
            raise InitialWeightsError(
                f"init_fold {fold}: {path} holds one network, not a fold ensemble; drop --init-fold (init_fold)"
            )
        return state
    folds = [int(member) for member in definition.get("folds", [])]
    if fold not in folds:
        chosen = "no member is chosen" if fold is None else f"it holds no fold {fold}"
        raise InitialWeightsError(
            f"{path}: a fold ensemble of folds {', '.join(map(str, folds))} ({Path(path).parent / MODEL_CONFIG_FILE}) "
            f"and {chosen}; choose the member to start from with --init-fold K (init_fold)"
        )
    return member_state(state, folds.index(fold))


def load_initial_weights(network: torch.nn.Module, path: str | os.PathLike, fold: int | None = None) -> None:
    """Load :func:`initial_weights` of ``path`` (and ``fold``) into ``network``, the configured network.

    ``train.json`` calls this in ``initialize`` where ``init_from`` is set, before any dataset is read. Raises
    ``CheckpointMismatchError`` naming the file and the first key or shape that does not fit, before any weight
    of ``network`` changes.
    """
    state = initial_weights(path, fold)
    problem = weights_mismatch(network.state_dict(), state)
    if problem:
        member = f" (fold {fold})" if fold is not None else ""
        raise CheckpointMismatchError(
            f"{path}{member}: does not fit the configured network: {problem}; configure the network it was "
            f"trained with (network_def in the {MODEL_CONFIG_FILE} beside it; the shipped model: --recipe cpu)"
        )
    network.load_state_dict(state)
