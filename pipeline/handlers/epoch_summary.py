"""One line per training epoch: the epoch's mean loss, the validation score when it ran, and the time left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import from_engine


class EpochSummary:
    """Log one line as each training epoch ends, e.g.
    ``epoch 6/30: loss 0.4123, val_mean_dice 0.5219 (best 0.5219 at epoch 6), about 12m 40s left``.

    The time left is the mean duration of the epochs this run has trained so far (validation included) times the
    epochs still to go (a resumed run counts from where it resumed); the last epoch's line gives the run's time
    instead. In a multi-process run only rank 0 logs.

    Args:
        validator: the evaluator run by ``ValidationHandler``; its key metric is shown for the epochs it ran.
            Attach this handler after ``ValidationHandler`` so the metric is the current epoch's.
        loss_transform: maps ``engine.state.output`` to the iteration's loss (default: its ``loss`` entry).
        name: the logger the lines go to.
    """

    def __init__(
        self,
        validator: Engine | None = None,
        loss_transform: Callable | None = None,
        name: str = "pipeline.training",
    ) -> None:
        self.validator = validator
        self.loss_transform = loss_transform or from_engine(["loss"], first=True)
        self.logger = logging.getLogger(name)
        self._loss_sum = 0.0
        self._loss_count = 0
        self._started_at = 0.0
        self._first_epoch = 0

    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on ``engine``."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        self._started_at, self._first_epoch = time.monotonic(), engine.state.epoch

    def _epoch_started(self, engine: Engine) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def _iteration_completed(self, engine: Engine) -> None:
        self._loss_sum += float(self.loss_transform(engine.state.output))
        self._loss_count += 1

    def _epoch_completed(self, engine: Engine) -> None:
        state = engine.state
        parts = [f"epoch {state.epoch}/{state.max_epochs}: loss {self._loss_sum / max(self._loss_count, 1):.4f}"]
        validation = self.validator.state if self.validator is not None else None
        name = getattr(validation, "key_metric_name", None)
        if validation is not None and validation.epoch == state.epoch and name in validation.metrics:
            parts.append(
                f"{name} {validation.metrics[name]:.4f} "
                f"(best {validation.best_metric:.4f} at epoch {validation.best_metric_epoch})"
            )
        elapsed = time.monotonic() - self._started_at
        if state.epoch < state.max_epochs:
            seconds_left = elapsed / max(state.epoch - self._first_epoch, 1) * (state.max_epochs - state.epoch)
            parts.append(f"about {_duration(seconds_left)} left")
        else:
            parts.append(f"done in {_duration(elapsed)}")
        self._log(", ".join(parts))

    @idist.one_rank_only()
    def _log(self, line: str) -> None:
        self.logger.info(line)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"
