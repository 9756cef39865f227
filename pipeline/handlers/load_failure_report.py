"""Report the inputs a batch run could not read, and fail the run for them once everything else is written."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ignite.engine import Engine, Events

from pipeline.user_errors import UserError

logger = logging.getLogger(__name__)


class InputFailuresError(UserError, RuntimeError):
    """Some inputs of a batch run could not be read; the others were processed.

    Args:
        failures: one line per input, naming the file and the fault.
        total: the number of inputs of the run.
    """

    def __init__(self, failures: Sequence[str], total: int) -> None:
        self.failures = list(failures)
        lines = [f"{len(self.failures)} of {total} inputs could not be segmented (all others were written):"]
        super().__init__("\n".join(lines + [f"  {line}" for line in self.failures]))


class LoadFailureReport:
    """List, when the run completes, the inputs a ``FailureTolerantEvaluator`` skipped.

    Attach it to the evaluator; call ``raise_if_any()`` after the run (the config's ``finalize``) so the run
    ends with ``InputFailuresError``, and so a non-zero exit status, once every good input has been written.
    """

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.total = 0

    def attach(self, engine: Engine) -> None:
        """Collect ``engine.state.load_failures`` when ``engine`` completes."""
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _completed(self, engine: Engine) -> None:
        self.failures = list(getattr(engine.state, "load_failures", []))
        self.total = len(engine.data_loader.dataset) if hasattr(engine.data_loader, "dataset") else 0
        if self.failures:
            logger.warning(
                "%d of %d inputs could not be read:\n  %s", len(self.failures), self.total, "\n  ".join(self.failures)
            )

    def raise_if_any(self) -> None:
        """Raise ``InputFailuresError`` when the last run skipped any input."""
        if self.failures:
            raise InputFailuresError(self.failures, self.total)
