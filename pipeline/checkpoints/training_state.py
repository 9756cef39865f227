"""The parts of a training run that have no ``state_dict`` of their own: random generators and the AMP scaler.

Both objects below expose ``state_dict``/``load_state_dict`` so ignite's ``Checkpoint`` saves them beside the
network and optimiser, and hold only tensors, numbers and strings so ``torch.load(weights_only=True)`` reads
them back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events


class RandomStates:
    """The global random generators of Python, NumPy and torch (CPU and every CUDA device).

    With ``num_workers > 0`` MONAI's ``DataLoader`` seeds each worker's random transforms from the torch
    generator, so restoring these states continues the shuffling and augmentation streams of the run.
    """

    def state_dict(self) -> dict[str, Any]:
        """The current states."""
        numpy_state = np.random.get_state(legacy=False)
        return {
            "python": random.getstate(),
            "numpy": {
                "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                "pos": int(numpy_state["state"]["pos"]),
                "has_gauss": int(numpy_state["has_gauss"]),
                "gauss": float(numpy_state["gauss"]),
            },
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the states; CUDA states are restored only where as many devices are present.

        A checkpoint loaded with ``map_location`` on a GPU brings these tensors there too; generator states are
        set from host memory, so each is brought back first.
        """
        random.setstate(_as_python_state(state["python"]))
        numpy_state = state["numpy"]
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": numpy_state["key"].cpu().numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                "has_gauss": numpy_state["has_gauss"],
                "gauss": numpy_state["gauss"],
            }
        )
        torch.set_rng_state(state["torch"].cpu())
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([generator.cpu() for generator in state["cuda"]])


class GradScalerState:
    """The AMP ``GradScaler`` of a MONAI trainer, which the trainer creates afresh in every ``run()``.

    Loading before the run keeps the state until the trainer has made its scaler, then restores it there.
    Without AMP the state is empty and loading it does nothing.

    Args:
        trainer: the MONAI trainer whose ``scaler`` is saved and restored.
    """

    def __init__(self, trainer: Engine) -> None:
        self.trainer = trainer
        self._pending: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        """Restore a loaded state into ``engine.scaler`` when the run starts."""
        engine.add_event_handler(Events.STARTED, self._restore)

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state, empty without AMP."""
        scaler = getattr(self.trainer, "scaler", None)
        return scaler.state_dict() if scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep ``state`` for the scaler the next run creates (or restore it now if the run has started)."""
        self._pending = dict(state)
        if getattr(self.trainer, "scaler", None) is not None:
            self._restore(self.trainer)

    def _restore(self, engine: Engine) -> None:
        scaler = getattr(self.trainer, "scaler", None)
        if self._pending and scaler is not None:
            scaler.load_state_dict(self._pending)
        self._pending = {}


def _as_python_state(state: Any) -> tuple:
    """``random.setstate`` wants tuples; a checkpoint may hand lists back."""
    version, internal, gauss = state
    return version, tuple(internal), gauss
