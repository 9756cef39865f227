"""One line per training epoch: the epoch's mean loss, the validation score when it ran, and the time left."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from pipeline.progress import duration_text


class EpochSummary:
    """Log one line as each training epoch ends, e.g. ``epoch 6/30: loss 0.4123, val_mean_dice 0.5219 (best 0.5219
    at epoch 6), no prediction on 3 of 60 slices, about 12m 40s left``.

    The time left is the typical epoch of this run so far times the epochs still to go: the median duration of the
    epochs with validation and of those without, weighted by how often validation ran. The median keeps one long
    epoch (a paused process, a suspended machine) from inflating it; a resumed run counts from where it resumed.
    The last epoch's line gives the run's time instead, and where the model is: ``model_file``, with the epoch whose
    weights it holds (the best validated one). The validation slices on which the model predicts no tumour
    at all are counted, when there are any (MONAI's Hausdorff metric would warn of each). In a multi-process run
    only rank 0 logs.

    Args:
        validator: the evaluator run by ``ValidationHandler``; its key metric is shown for the epochs it ran.
            Attach this handler after ``ValidationHandler`` so the metric is the current epoch's.
        loss_transform: maps ``engine.state.output`` to the iteration's loss (default: its ``loss`` entry).
        name: the logger the lines go to.
        model_file: the file the best validated weights are saved to, named in the last line.
    """

    def __init__(
        self,
        validator: Engine | None = None,
        loss_transform: Callable | None = None,
        name: str = "pipeline.training",
        model_file: str | None = None,
    ) -> None:
        self.validator = validator
        self.model_file = model_file
        self.loss_transform = loss_transform or from_engine(["loss"], first=True)
        self.logger = logging.getLogger(name)
        self._loss_sum = 0.0
        self._loss_count = 0
        self._started_at = 0.0
        self._epoch_started_at = 0.0
        self._epoch_seconds: dict[bool, list[float]] = {False: [], True: []}  # keyed by "validation ran"
        self._validated_slices = 0
        self._no_prediction = 0

    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on ``engine`` (and on the validator, to count its empty predictions)."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_STARTED, self._validation_started)
            self.validator.add_event_handler(Events.ITERATION_COMPLETED, self._validation_iteration_completed)

    def _started(self, engine: Engine) -> None:
        self._started_at = time.monotonic()

    def _epoch_started(self, engine: Engine) -> None:
        self._loss_sum, self._loss_count = 0.0, 0
        self._epoch_started_at = time.monotonic()

    def _iteration_completed(self, engine: Engine) -> None:
        self._loss_sum += float(self.loss_transform(engine.state.output))
        self._loss_count += 1

    def _validation_started(self, validator: Engine) -> None:
        self._validated_slices, self._no_prediction = 0, 0

    def _validation_iteration_completed(self, validator: Engine) -> None:
        items = validator.state.output if isinstance(validator.state.output, list) else []
        predictions = [item["pred"] for item in items if isinstance(item, dict) and "pred" in item]
        self._validated_slices += len(predictions)
        # A one-hot prediction's tumour channels follow the background; a single-channel mask is the tumour itself.
        self._no_prediction += sum(not bool((pred[1:] if len(pred) > 1 else pred).any()) for pred in predictions)

    def _epoch_completed(self, engine: Engine) -> None:
        state = engine.state
        parts = [f"epoch {state.epoch}/{state.max_epochs}: loss {self._loss_sum / max(self._loss_count, 1):.4f}"]
        validation = self.validator.state if self.validator is not None else None
        name = getattr(validation, "key_metric_name", None)
        validated = validation is not None and validation.epoch == state.epoch and name in validation.metrics
        self._epoch_seconds[validated].append(time.monotonic() - self._epoch_started_at)
        if validated:
            parts.append(
                f"{name} {validation.metrics[name]:.4f} "
                f"(best {validation.best_metric:.4f} at epoch {validation.best_metric_epoch})"
            )
            if self._no_prediction:
                parts.append(f"no prediction on {self._no_prediction} of {self._validated_slices} slices")
        if state.epoch < state.max_epochs:
            left = self._typical_epoch_seconds() * (state.max_epochs - state.epoch)
            parts.append(f"about {duration_text(left)} left")
        else:
            parts.append(f"done in {duration_text(time.monotonic() - self._started_at)}")
            if self.model_file is not None:
                parts.append(self._model_text(validation))
        self._log(", ".join(parts))

    def _model_text(self, validation: object) -> str:
        best_epoch = getattr(validation, "best_metric_epoch", -1)
        if best_epoch is None or best_epoch < 1:
            return f"no model in {self.model_file}: no epoch was validated"
        return f"model: {self.model_file} (epoch {best_epoch}, the best validated)"

    def _typical_epoch_seconds(self) -> float:
        """The median epoch with and without validation, weighted by how often each kind has run."""
        epochs = sum(len(seconds) for seconds in self._epoch_seconds.values())
        return sum(
            statistics.median(seconds) * len(seconds) / epochs for seconds in self._epoch_seconds.values() if seconds
        )

    @idist.one_rank_only()
    def _log(self, line: str) -> None:
        self.logger.info(line)
