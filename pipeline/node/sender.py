"""The node's sender: each SEG to its destination, retried with back-off until it is stored.

The destination is the caller's own address (``send_to: sender``) or the configured DICOM node or DICOMweb
server. A failed send stays ``segmented`` in the journal with the reason and the time of the next try, which
doubles after each failure from ``retry.first_seconds`` up to ``retry.max_seconds``. A SEG keeps its
SOPInstanceUID through every try, so a send repeated after a crash (the destination stored it, the journal had
not yet said so) stores the same instance again, which a PACS keeps once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.dicom import dicomweb, pacs
from pipeline.dicom.pacs import PacsNode
from pipeline.node.config import DicomwebDestination, NodeConfig
from pipeline.node.journal import Journal, SeriesEntry
from pipeline.user_errors import find_user_error

log = logging.getLogger("pipeline.node")


def retry_delay(attempts: int, first: float, most: float) -> float:
    """Seconds before the try after ``attempts`` failed ones: ``first`` doubled each time, at most ``most``."""
    return min(most, first * 2.0 ** min(attempts, 32))


class SegSender:
    """Sends the segmented series of ``journal`` as ``config`` directs."""

    def __init__(self, config: NodeConfig, journal: Journal) -> None:
        self.config = config
        self.journal = journal

    def step(self) -> bool:
        """Send one SEG whose time has come; whether there was one."""
        entry = self.journal.next_to_send(time.time())
        if entry is None:
            return False
        try:
            destination = self._destination(entry)
            self._store(destination, Path(entry.seg_file or ""))
        except Exception as error:  # a refused or failed send is retried, whatever failed
            reason = str(find_user_error(error) or f"{type(error).__name__}: {error}")
            delay = retry_delay(entry.attempts, self.config.retry_first_seconds, self.config.retry_max_seconds)
            self.journal.send_failed(entry, reason, time.time() + delay)
            log.warning(
                "series %s: sending its SEG failed (try %d): %s; next try in %.0f s",
                entry.series_uid,
                entry.attempts + 1,
                reason,
                delay,
            )
            return True
        if self.journal.mark_sent(entry, str(destination)):
            log.info(
                "series %s from %s: %d instances received, segmented in %.1f s, sent to %s",
                entry.series_uid,
                entry.calling_aet,
                entry.instances,
                entry.segment_seconds or 0.0,
                destination,
            )
        return True

    def _destination(self, entry: SeriesEntry) -> PacsNode | DicomwebDestination:
        if self.config.send_to == "sender" and entry.calling_aet not in self.config.callers:
            raise LookupError(f"the caller {entry.calling_aet!r} is no longer in the node's config")
        return self.config.destination(entry.calling_aet)

    def _store(self, destination: PacsNode | DicomwebDestination, path: Path) -> None:
        if isinstance(destination, DicomwebDestination):
            credentials = dicomweb.read_credentials(destination.auth_file)
            server = dicomweb.connect(destination.url, credentials, self.config.timeout_seconds)
            dicomweb.store_files(server, [path])
        else:
            pacs.store_files(destination, [path])
