"""What a weights file is: its SHA-256 and, for a fold ensemble, each member model's own SHA-256."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.checkpoints.model_config import read_model_config
from pipeline.checkpoints.safe_loading import load_checkpoint
from pipeline.export.package import sha256_of
from pipeline.networks.ensemble import ENSEMBLE_TARGET, member_state, state_digest


def describe_weights(
    weights: str | os.PathLike, folds: Sequence[int] | None = None, state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"path", "sha256", "models": [{"fold", "sha256", "used"}]}`` of the weights file ``weights``.

    ``models`` lists each fold model of an ensemble (as named by the ``model_config.json`` beside the weights)
    with the digest of its own weights (``pipeline.networks.state_digest``: the same digest as the fold's run
    folder gives for its ``model.pt``), and whether this run used it (``folds``: the selection, None for all).
    A single model is one entry with fold ``None``. A missing file gives ``sha256`` None and no models. ``state``
    is the file's state dict where the caller loaded it already.
    """
    weights = Path(weights)
    if not weights.is_file():
        return {"path": str(weights), "sha256": None, "models": []}
    if state is None:
        state = load_checkpoint(weights, map_location="cpu")
        state = state.get("model", state) if isinstance(state, dict) else {}
    definition = (read_model_config(weights.parent) or {}).get("network_def", {})
    models: list[dict[str, Any]] = []
    if isinstance(definition, dict) and definition.get("_target_") == ENSEMBLE_TARGET:
        for index, fold in enumerate(definition.get("folds", [])):
            member = member_state(state, index)
            models.append({"fold": fold, "sha256": state_digest(member), "used": folds is None or fold in folds})
    else:
        models.append({"fold": None, "sha256": state_digest(state), "used": True})
    return {"path": str(weights), "sha256": sha256_of(weights), "models": models}
