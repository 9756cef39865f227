"""An ignite handler that keeps the learning curve of a training run as CSV and PNG."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from pathlib import Path

from ignite.engine import Engine, Events
from monai.handlers import from_engine

from pipeline.atomic import write_text_atomic
from pipeline.reports.figures import plot_learning_curve


class LearningCurveHandler:
    """Record mean training loss, learning rate and the validator's metrics once per epoch.

    After every epoch ``learning_curve.csv`` and ``learning_curve.png`` in ``output_dir`` are rewritten
    atomically. A resumed run keeps the rows of the epochs it resumes from, so the curve continues.

    Args:
        output_dir: folder for ``learning_curve.csv`` and ``learning_curve.png``.
        validator: the evaluator run by ``ValidationHandler``; its metrics are recorded for the epochs it ran.
            Attach this handler after ``ValidationHandler`` so the metrics are those of the current epoch.
        loss_transform: maps ``engine.state.output`` to the iteration's loss (default: its ``loss`` entry).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        validator: Engine | None = None,
        loss_transform: Callable | None = None,
    ) -> None:
        self.csv_path = Path(output_dir) / "learning_curve.csv"
        self.png_path = Path(output_dir) / "learning_curve.png"
        self.validator = validator
        self.loss_transform = loss_transform or from_engine(["loss"], first=True)
        self.rows: list[dict[str, float]] = []
        self._loss_sum = 0.0
        self._loss_count = 0

    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on ``engine``."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        resumed_epoch = engine.state.epoch
        self.rows = [row for row in self._read_rows() if row["epoch"] <= resumed_epoch] if resumed_epoch else []

    def _epoch_started(self, engine: Engine) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def _iteration_completed(self, engine: Engine) -> None:
        self._loss_sum += float(self.loss_transform(engine.state.output))
        self._loss_count += 1

    def _epoch_completed(self, engine: Engine) -> None:
        row: dict[str, float] = {
            "epoch": engine.state.epoch,
            "train_loss": self._loss_sum / max(self._loss_count, 1),
        }
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            row["lr"] = optimizer.param_groups[0]["lr"]
        if self.validator is not None and self.validator.state.epoch == engine.state.epoch:
            row.update({name: float(value) for name, value in self.validator.state.metrics.items()})
        self.rows.append(row)
        self._write()

    def _read_rows(self) -> list[dict[str, float]]:
        if not self.csv_path.is_file():
            return []
        with open(self.csv_path, newline="") as handle:
            return [
                {key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(handle)
            ]

    def _write(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: _format(value) for key, value in row.items()})
        write_text_atomic(self.csv_path, buffer.getvalue())
        plot_learning_curve(self.rows, self.png_path)


def _format(value: float) -> str:
    return "" if isinstance(value, float) and not math.isfinite(value) else f"{value:.6g}"
