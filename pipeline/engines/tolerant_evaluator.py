"""A MONAI evaluator that keeps going past inputs that fail, and keeps a list of them."""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator
from monai.utils import ImageMetaKey

from pipeline.atomic import OutputFolderFaultError, take_folder_fault
from pipeline.data.load_failures import LOAD_FAILURES, failure_line
from pipeline.user_errors import find_user_error

logger = logging.getLogger(__name__)


class FailureTolerantEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` over batches from ``collate_without_failures`` that goes on past failed inputs.

    An input that failed to load arrives as a failure line; an input whose network pass, post-processing or
    writers raise becomes one, naming its file and the fault. Each line is logged when met and kept in
    ``state.load_failures`` (reset at every run); a failed batch leaves ``state.batch`` empty, so no handler takes
    its inputs for done. A full or read-only output folder (``OutputFolderFaultError``) still stops the run: every
    later input would fail alike. Arguments are those of ``SupervisedEvaluator``.
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
                self._fail(engine, line)
            if not batchdata:
                return {}
        take_folder_fault()
        try:
            return super()._iteration(engine, batchdata)
        except Exception as error:
            fault = take_folder_fault() or find_user_error(error)
            if isinstance(fault, OutputFolderFaultError):
                raise fault from None
            for source in batch_sources(batchdata):
                self._fail(engine, failure_line(source, error))
            engine.state.batch = []
            return {}

    @staticmethod
    def _fail(engine: Engine, line: str) -> None:
        logger.warning("skipped: %s", line)
        engine.state.load_failures.append(line)


def batch_sources(batchdata: Any) -> list[str]:
    """The input files of a collated batch (its ``image`` metadata); ``["the batch"]`` when it names none."""
    image = batchdata.get("image") if isinstance(batchdata, dict) else None
    names = image.meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(image, MetaTensor) else None
    names = [names] if isinstance(names, str) else list(names or [])
    return [str(name) for name in names] or ["the batch"]
