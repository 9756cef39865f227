"""Stop a training whose loss or weights stop being finite, before any checkpoint of them is written."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from pipeline.user_errors import UserError


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced a NaN or infinite loss or weight; the message names the epoch and iteration."""


class NonFiniteLossGuard:
    """Raise ``NonFiniteLossError`` on the first NaN/Inf loss, and before an epoch ends with non-finite weights.

    The loss is checked after every iteration, so the run stops inside the epoch and the epoch's checkpoints
    (written at ``EPOCH_COMPLETED``) are never written. The weights are checked at ``EPOCH_COMPLETED``, for the
    rare last step that turns finite gradients into non-finite weights; attach this handler before the
    ``ValidationHandler`` and the checkpoint savers so it runs first. With AMP, a step whose *gradients*
    overflow is skipped by the ``GradScaler`` as usual and is no fault; a non-finite *loss* always is.

    Args:
        loss_transform: maps ``engine.state.output`` to the iteration's loss (default: its ``loss`` entry).
    """

    def __init__(self, loss_transform: Callable | None = None) -> None:
        self.loss_transform = loss_transform or from_engine(["loss"], first=True)

    def attach(self, engine: Engine) -> None:
        """Check ``engine``'s loss every iteration and its network's weights every epoch."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._check_weights)

    def _check_loss(self, engine: Engine) -> None:
        loss = float(self.loss_transform(engine.state.output))
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"{_where(engine)}: the training loss is {loss}; {_advice(engine)}")

    def _check_weights(self, engine: Engine) -> None:
        network = getattr(engine, "network", None)
        if network is None:
            return
        for name, parameter in network.named_parameters():
            if not torch.isfinite(parameter).all():
                raise NonFiniteLossError(f"{_where(engine)}: weight '{name}' is not finite; {_advice(engine)}")


def _where(engine: Engine) -> str:
    state = engine.state
    in_epoch = (state.iteration - 1) % state.epoch_length + 1 if state.epoch_length else state.iteration
    return (
        f"training stopped at epoch {state.epoch}, iteration {state.iteration} "
        f"({in_epoch} of {state.epoch_length} in the epoch)"
    )


def _advice(engine: Engine) -> str:
    kept = f"epoch {engine.state.epoch - 1}" if engine.state.epoch > 1 else "no epoch (none had finished)"
    return (
        f"nothing of this epoch was saved, the checkpoints of {kept} are kept; lower the learning rate, "
        "check the data for extreme values, or turn AMP off, then start again or resume with --resume"
    )
