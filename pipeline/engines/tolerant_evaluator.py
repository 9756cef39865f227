"""A MONAI evaluator that runs on the inputs that loaded and keeps a list of those that did not."""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator

from pipeline.data.load_failures import LOAD_FAILURES

logger = logging.getLogger(__name__)


class FailureTolerantEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` over batches from ``collate_without_failures``: failed inputs are skipped.

    Each failure line is logged when met and kept in ``state.load_failures`` (reset at every run); a batch
    with no loaded item is skipped whole, without running the network, post-processing or metrics.
    Arguments are those of ``SupervisedEvaluator``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state.load_failures = []
        self.add_event_handler(Events.STARTED, self._reset_failures)

    def _reset_failures(self, engine: Engine) -> None:
        engine.state.load_failures = []

    def _iteration(self, engine: SupervisedEvaluator, batchdata: Any) -> dict:
        if isinstance(batchdata, dict) and LOAD_FAILURES in batchdata:
            batchdata = dict(batchdata)
            for line in batchdata.pop(LOAD_FAILURES):
                logger.warning("skipped: %s", line)
                engine.state.load_failures.append(line)
            if not batchdata:
                return {}
        return super()._iteration(engine, batchdata)
