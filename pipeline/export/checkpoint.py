"""Read a checkpoint's weights and prove they fit the network the bundle config builds."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from pipeline.export.errors import BundleExportError


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The network weights in ``path``: a plain state dict, or the ``model`` entry of a full training checkpoint.

    Loaded on the CPU with ``weights_only=True``, so a checkpoint written on a GPU, or one holding arbitrary
    pickled objects, is read safely.
    """
    if not path.is_file():
        raise BundleExportError(f"{path}: checkpoint not found; train first (python -m pipeline train) or pass --ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BundleExportError(f"{path}: not a PyTorch checkpoint ({first_line})") from error
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise BundleExportError(f"{path}: holds no network state dict (expected name -> tensor, or a 'model' entry)")
    return state


def check_fits(network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`BundleExportError` naming the first key that ``state`` (read from ``path``) lacks,
    adds, or holds at another shape than ``network``'s."""
    expected = network.state_dict()
    hint = "export with the overrides it was trained with, e.g. --network_def#features"
    for key, tensor in expected.items():
        if key not in state:
            raise BundleExportError(f"{path}: checkpoint lacks {key!r} of the configured network; {hint}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise BundleExportError(
                f"{path}: {key!r} has shape {list(state[key].shape)} in the checkpoint but "
                f"{list(tensor.shape)} in the configured network; {hint}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise BundleExportError(f"{path}: checkpoint has {extra[0]!r}, unknown to the configured network; {hint}")
