"""Read a checkpoint's weights and prove they fit the network the bundle config builds."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.checkpoints.safe_loading import load_checkpoint, weights_mismatch
from pipeline.export.errors import BundleExportError


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The network weights in ``path``: a plain state dict, or the ``model`` entry of a full training checkpoint.

    Loaded on the CPU by ``pipeline.checkpoints.load_checkpoint`` (tensors only), so a checkpoint written on a
    GPU is read, and one holding pickled objects, an empty or a truncated file is refused in one line.
    """
    if not path.is_file():
        raise BundleExportError(f"{path}: checkpoint not found; train first (python -m pipeline train) or pass --ckpt")
    checkpoint = load_checkpoint(path, map_location="cpu")
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise BundleExportError(f"{path}: holds no network state dict (expected name -> tensor, or a 'model' entry)")
    return state


def is_state_dict_file(path: Path) -> bool:
    """Whether ``path`` holds a bare state dict (as ``model.pt`` does), not a full training checkpoint."""
    return "model" not in torch.load(path, map_location="cpu", weights_only=True)


def check_fits(network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`BundleExportError` naming the first key that ``state`` (read from ``path``) lacks,
    adds, or holds at another shape than ``network``'s."""
    problem = weights_mismatch(network.state_dict(), state)
    if problem:
        raise BundleExportError(
            f"{path}: {problem}; export with the model_config.json training wrote beside it, or with the "
            "overrides it was trained with, e.g. --network_def#features"
        )
