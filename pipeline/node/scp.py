"""The node's DICOM Storage SCP: associations from the configured callers only, each instance checked, spooled
and journalled before its C-STORE is answered.

The status of each C-STORE tells the sender what happened (and the journal records why):

- spooled, or received before: 0x0000 Success;
- a SOP class or series the node does not segment: 0x0000 with ``other_objects: ignore`` (journal: ``ignored``),
  0x0122 Refused: SOP Class Not Supported with ``reject`` (journal: ``rejected``);
- an image the node cannot use (no pixels, no geometry, colour, NaN pixels, no decoder): 0xA900 Data Set Does
  Not Match SOP Class (``rejected``);
- a data set that does not decode: 0xC210 Cannot Understand (``rejected``);
- the spool or the journal cannot be written (disk full): 0xA700 Refused: Out of Resources (``rejected``).

An association the sender releases completes the series it carried; an aborted one leaves them receiving
until their quiet period ends.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from pipeline.dicom.series import UnusableInstanceError, check_instance
from pipeline.node.config import NodeConfig
from pipeline.node.journal import IGNORED, REJECTED, Journal
from pipeline.node.spool import Spool
from pipeline.user_errors import UserError

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC210

log = logging.getLogger("pipeline.node")


class NodeListenError(UserError, OSError):
    """The node cannot listen on its address and port."""


class _Refused(Exception):
    """An instance refused with a DIMSE status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class StorageSCP:
    """Receives instances for the node described by ``config`` into ``spool`` and ``journal``; calls
    ``on_complete`` after an association's series are marked complete."""

    def __init__(self, config: NodeConfig, journal: Journal, spool: Spool, on_complete: Callable[[], object]) -> None:
        self.config = config
        self.journal = journal
        self.spool = spool
        self.on_complete = on_complete
        self._series_of: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self._ae = AE(ae_title=config.ae_title)
        self._ae.require_calling_aet = list(config.callers)
        for timeout in ("acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(self._ae, timeout, config.timeout_seconds)
        self._ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            self._ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._server = None

    def start(self) -> None:
        """Listen on the configured address and port, in the background; ``NodeListenError`` when it cannot."""
        handlers = [
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_RELEASED, self._released),
            (evt.EVT_ABORTED, self._aborted),
        ]
        address = (self.config.host, self.config.port)
        try:
            self._server = self._ae.start_server(address, block=False, evt_handlers=handlers)
        except OSError as error:
            raise NodeListenError(
                f"cannot listen on {self.config.host}:{self.config.port}: {error.strerror or error}; is another "
                "program (or node) using that port?"
            ) from None

    def stop(self) -> None:
        """Stop listening and abort the associations in progress (their senders resend what was not answered)."""
        if self._server is None:
            return
        active = list(self._server.active_associations)
        self._server.shutdown()
        for assoc in active:
            assoc.abort()
        self._server = None

    def _store(self, event: evt.Event) -> int:
        calling = event.assoc.requestor.ae_title
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        series_uid = None
        try:
            dataset, series_uid = self._decode(event)
            sop_uid = str(dataset.SOPInstanceUID)
            self._check_wanted(dataset)
            if not self.journal.knows_instance(sop_uid):  # one sent again (after a failed association) is kept once
                self._spool(event, dataset, series_uid, calling)
        except _Refused as refused:
            ignored = refused.status == SUCCESS
            self.journal.instance_event(IGNORED if ignored else REJECTED, sop_uid, series_uid, calling, str(refused))
            if not ignored:
                log.warning("instance %s from %s refused (0x%04X): %s", sop_uid, calling, refused.status, refused)
            return refused.status
        with self._lock:
            self._series_of.setdefault(id(event.assoc), set()).add(series_uid)
        return SUCCESS

    def _spool(self, event: evt.Event, dataset: Dataset, series_uid: str, calling: str) -> None:
        """Check the instance, write it to the spool and journal it; ``_Refused`` with the status otherwise."""
        try:
            check_instance(dataset)
        except UnusableInstanceError as error:
            raise _Refused(DOES_NOT_MATCH_SOP_CLASS, str(error)) from None
        sop_uid, study_uid = str(dataset.SOPInstanceUID), str(dataset.StudyInstanceUID)
        try:
            path = self.spool.write(study_uid, series_uid, sop_uid, event.encoded_dataset())
        except OSError as error:
            raise _Refused(OUT_OF_RESOURCES, f"cannot write the spool: {error.strerror or error}") from None
        folder = self.spool.relative(path.parent)
        try:
            self.journal.add_instance(sop_uid, series_uid, study_uid, calling, folder, path.name)
        except sqlite3.Error as error:
            raise _Refused(OUT_OF_RESOURCES, f"cannot write the journal: {error}") from None

    def _decode(self, event: evt.Event) -> tuple[Dataset, str]:
        """The instance's data set and SeriesInstanceUID; ``_Refused`` with 0xC210 when it does not decode."""
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
                if not str(dataset.get(keyword, "") or ""):
                    raise ValueError(f"no {keyword}")
            return dataset, str(dataset.SeriesInstanceUID)
        except Exception as error:  # a damaged data set fails in many ways inside the parser
            reason = " ".join(str(error).split()) or type(error).__name__
            raise _Refused(CANNOT_UNDERSTAND, f"the data set cannot be decoded: {reason}") from None

    def _check_wanted(self, dataset: Dataset) -> None:
        """``_Refused`` (status 0 when such objects are ignored) for an instance of a series the node does not
        segment."""
        sop_class = str(dataset.SOPClassUID)
        description = str(dataset.get("SeriesDescription", "") or "")
        pattern = self.config.series_description
        if sop_class not in self.config.sop_classes:
            reason = f"{UID(sop_class).name} is not segmented here"
        elif pattern is not None and not pattern.search(description):
            reason = f"series description {description!r} does not match {pattern.pattern!r}"
        else:
            return
        ignore = self.config.other_objects == "ignore"
        raise _Refused(SUCCESS if ignore else SOP_CLASS_NOT_SUPPORTED, reason)

    def _released(self, event: evt.Event) -> None:
        with self._lock:
            series = self._series_of.pop(id(event.assoc), set())
        if series and self.journal.complete(series_uids=sorted(series)):
            self.on_complete()

    def _aborted(self, event: evt.Event) -> None:
        with self._lock:
            self._series_of.pop(id(event.assoc), None)
