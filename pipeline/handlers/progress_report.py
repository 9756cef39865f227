"""The progress of an engine's run over its data, item by item, as :class:`pipeline.progress.Progress` reports it."""

from __future__ import annotations

import ignite.distributed as idist
from ignite.engine import Engine, Events

from pipeline.progress import Progress


class ProgressReport:
    """Report the items an engine (an evaluator over slices, say) has done: a bar on a terminal, a plain line now
    and then elsewhere. In a multi-process run only rank 0 reports.

    Args:
        unit: what one item is, plural (``"slices"``).
        description: what the run does (``"scoring"``).
    """

    def __init__(self, unit: str = "slices", description: str = "progress") -> None:
        self.unit, self.description = unit, description
        self._progress: Progress | None = None

    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on ``engine``."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        # Not on EXCEPTION_RAISED: an engine with a handler for it no longer raises the error itself.
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        data = getattr(engine, "data_loader", None)
        dataset = getattr(data, "dataset", None)
        total = len(dataset) if hasattr(dataset, "__len__") else engine.state.epoch_length
        self._progress = Progress(total, self.unit, self.description, quiet=idist.get_rank() != 0)

    def _iteration_completed(self, engine: Engine) -> None:
        batch = engine.state.batch
        if self._progress is not None:
            self._progress.advance(len(batch) if isinstance(batch, list) else 1)

    def _completed(self, engine: Engine) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
