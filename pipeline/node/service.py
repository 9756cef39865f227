"""The node as one service: its journal, spool, Storage SCP, segmentation worker and sender, started and stopped
together.

:meth:`DicomNode.start` removes what a crash left half-written, restarts the quiet period of the series still
receiving, and starts the worker and the sender before listening, so whatever the journal holds pending is
finished. :meth:`DicomNode.stop` stops listening first (associations in progress are aborted; their senders
resend what was not answered), lets the worker finish the series it is segmenting and the sender the SEG it is
sending, and leaves everything else pending in the journal for the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pipeline.atomic import remove_stale_temporaries_below
from pipeline.inference.slice_segmenter import SliceSegmenter
from pipeline.node.config import NodeConfig
from pipeline.node.journal import Journal
from pipeline.node.scp import StorageSCP
from pipeline.node.sender import SegSender
from pipeline.node.spool import Spool
from pipeline.node.worker import SegmentationWorker

SPOOL_FOLDER, RESULTS_FOLDER = "spool", "results"
# How often an idle worker looks for series gone quiet, and an idle sender for retries that came due (seconds).
POLL_SECONDS = 0.5

log = logging.getLogger("pipeline.node")


class DicomNode:
    """The node ``config`` describes, segmenting with ``segmenter``; nothing runs until :meth:`start`."""

    def __init__(self, config: NodeConfig, segmenter: SliceSegmenter) -> None:
        self.config = config
        self.journal = Journal(config.work_dir)
        self.spool = Spool(config.work_dir / SPOOL_FOLDER)
        self.results = config.work_dir / RESULTS_FOLDER
        self.worker = SegmentationWorker(self.journal, self.spool, self.results, segmenter, config.quiet_seconds)
        self.sender = SegSender(config, self.journal)
        self._stopping = threading.Event()
        self._segment_wake = threading.Event()
        self._send_wake = threading.Event()
        self.scp = StorageSCP(config, self.journal, self.spool, on_complete=self._segment_wake.set)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Clean up after a crash, start the worker and the sender, then listen."""
        self.spool.remove_stale_temporaries()
        remove_stale_temporaries_below(self.results)
        receiving = self.journal.restart_quiet_periods()
        self._threads = [
            threading.Thread(target=self._loop, args=(self._segment, self._segment_wake), name="node-segment"),
            threading.Thread(target=self._loop, args=(self.sender.step, self._send_wake), name="node-send"),
        ]
        for thread in self._threads:
            thread.start()
        try:
            self.scp.start()
        except BaseException:
            self._join()
            raise
        config = self.config
        log.info(
            "listening as %s on %s:%d for %s; %d series still receiving",
            config.ae_title,
            config.host,
            config.port,
            ", ".join(config.callers),
            receiving,
        )

    def stop(self) -> None:
        """Stop listening, finish the step in progress, and close the journal."""
        self.scp.stop()
        self._join()
        self.journal.close()

    def _join(self) -> None:
        self._stopping.set()
        self._segment_wake.set()
        self._send_wake.set()
        for thread in self._threads:
            thread.join()

    def _segment(self) -> bool:
        done = self.worker.step()
        if done:
            self._send_wake.set()
        return done

    def _loop(self, step: Callable[[], bool], wake: threading.Event) -> None:
        """Run ``step`` while it finds work, else wait for ``wake`` or the next poll, until the node stops."""
        while not self._stopping.is_set():
            try:
                busy = step()
            except Exception:  # the node keeps serving; the journal still holds the series for the next try
                log.exception("unexpected error in %s", threading.current_thread().name)
                busy = False
            if not busy:
                wake.wait(POLL_SECONDS)
                wake.clear()
