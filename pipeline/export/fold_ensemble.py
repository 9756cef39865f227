"""The fold models of a cross-validation joined into the one ensemble checkpoint the bundle ships.

``models/model.pt`` holds the members' weights under ``members.<i>.`` (the state dict of
``pipeline.networks.ProbabilityEnsemble``), and ``models/model_config.json`` defines the ensemble around the
folds' shared network definition, so every stage, ``ckpt_export`` and model-zoo's checks rebuild it from the
config like any single network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.checkpoints import MODEL_CONFIG_FILE, load_checkpoint, read_model_config
from pipeline.networks.ensemble import ENSEMBLE_TARGET, MEMBER_PREFIX, member_state, state_digest
from pipeline.user_errors import UserError

MODEL_FILE = "model.pt"


def assemble_fold_ensemble(
    model_dirs: Mapping[int, str | os.PathLike], target_dir: str | os.PathLike
) -> dict[str, Any]:
    """Write the ensemble of the fold models in ``model_dirs`` (fold -> folder with ``model.pt`` and
    ``model_config.json``) to ``target_dir/model.pt`` and ``model_config.json``, atomically.

    Every fold must share one definition (network, input size, intensity scaling); ``UserError`` names the
    first that differs. Returns ``{"folds", "members": [{"fold", "sha256"}]}``, each member's digest being
    ``state_digest`` of its weights.
    """
    if not model_dirs:
        raise UserError("no fold model to assemble: train at least one fold first")
    folds = sorted(model_dirs)
    definitions = {fold: read_model_config(model_dirs[fold]) for fold in folds}
    first = definitions[folds[0]]
    for fold in folds:
        if definitions[fold] is None:
            raise UserError(f"{Path(model_dirs[fold]) / MODEL_CONFIG_FILE}: missing; the fold's model is undefined")
        if definitions[fold] != first:
            raise UserError(
                f"{Path(model_dirs[fold]) / MODEL_CONFIG_FILE}: differs from fold {folds[0]}'s definition; an "
                "ensemble needs fold models of one recipe"
            )
    state: dict[str, torch.Tensor] = {}
    members = []
    for index, fold in enumerate(folds):
        checkpoint = load_checkpoint(Path(model_dirs[fold]) / MODEL_FILE, map_location="cpu")
        member = checkpoint.get("model", checkpoint)
        members.append({"fold": fold, "sha256": state_digest(member)})
        state.update({f"{MEMBER_PREFIX}{index}.{name}": tensor for name, tensor in member.items()})
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(target_dir / MODEL_FILE) as tmp:
        torch.save(state, tmp)
    definition = {
        **first,
        "network_def": {
            "_target_": ENSEMBLE_TARGET,
            "member": first["network_def"],
            "folds": folds,
            "use_folds": "@folds",
        },
    }
    write_text_atomic(target_dir / MODEL_CONFIG_FILE, json.dumps(definition, indent=4) + "\n")
    return {"folds": folds, "members": members}


def refuse_dropping_folds(models_dir: str | os.PathLike, folds: Sequence[int]) -> None:
    """Raise ``UserError`` when the fold ensemble shipped in ``models_dir`` holds a fold that an ensemble of
    ``folds`` would lack, naming what would be replaced; a single network, or no model, is no ensemble to shrink."""
    network = (read_model_config(models_dir) or {}).get("network_def", {})
    if not isinstance(network, dict) or network.get("_target_") != ENSEMBLE_TARGET:
        return
    dropped = sorted(set(network["folds"]) - set(folds))
    if dropped:
        raise UserError(
            f"{Path(models_dir) / MODEL_FILE}: the bundle ships the ensemble of folds {_listed(network['folds'])}; "
            f"shipping folds {_listed(folds)} would drop folds {_listed(dropped)}; pass --overwrite to replace it"
        )


def _listed(folds: Sequence[int]) -> str:
    return ", ".join(str(fold) for fold in sorted(folds)) or "none"


def split_fold_ensemble(models_dir: str | os.PathLike, fold_model_dirs: Mapping[int, str | os.PathLike]) -> list[int]:
    """Write each member of the ensemble in ``models_dir`` whose fold is a key of ``fold_model_dirs`` back out as
    that fold's model (``model.pt`` and ``model_config.json``, atomically), the inverse of
    :func:`assemble_fold_ensemble`; return the folds written. A single network in ``models_dir`` gives none."""
    definition = read_model_config(models_dir) or {}
    network = definition.get("network_def", {})
    if not isinstance(network, dict) or network.get("_target_") != ENSEMBLE_TARGET:
        return []
    state = load_checkpoint(Path(models_dir) / MODEL_FILE, map_location="cpu")
    written = []
    for index, fold in enumerate(network["folds"]):
        if fold not in fold_model_dirs:
            continue
        member = member_state(state, index)
        target = Path(fold_model_dirs[fold])
        target.mkdir(parents=True, exist_ok=True)
        with atomic_path(target / MODEL_FILE) as tmp:
            torch.save(member, tmp)
        single = {**definition, "network_def": network["member"]}
        write_text_atomic(target / MODEL_CONFIG_FILE, json.dumps(single, indent=4) + "\n")
        written.append(fold)
    return written
