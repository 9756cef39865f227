"""A small DIMSE client for a PACS: C-ECHO, C-FIND of series, C-GET of a series into a folder, C-STORE of files.

Every failure a user can act on raises a ``UserError`` that names the server (``AET@host:port``): ``PacsError``
for no connection, a rejected association or a failed status (with its code and meaning), ``NothingFoundError``
for a query that matched nothing.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association, build_role, evt
from pynetdicom.sop_class import (
    EnhancedMRImageStorage,
    MRImageStorage,
    SegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)
from pynetdicom.status import (
    GENERAL_STATUS,
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    STORAGE_SERVICE_CLASS_STATUS,
    VERIFICATION_SERVICE_CLASS_STATUS,
)

from pipeline.atomic import atomic_path
from pipeline.outputs import one_line
from pipeline.user_errors import UserError

# The SOP classes a C-GET accepts back on its own association: the images the model segments, and SEGs.
RETRIEVED_SOP_CLASSES = (MRImageStorage, EnhancedMRImageStorage, SegmentationStorage)
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
PENDING = (0xFF00, 0xFF01)
# After a failed connection, a second plain one is tried for the system's reason (refused, unreachable...).
PROBE_TIMEOUT_S = 5.0
# UIDs name the retrieved files and folders: only plain UIDs are safe names.
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")


class PacsError(UserError, ConnectionError):
    """The PACS could not be reached, refused the association, or answered with a failure status."""


class NothingFoundError(UserError, LookupError):
    """A C-FIND matched nothing."""


@dataclass(frozen=True)
class PacsNode:
    """A DICOM server, how to call it, and how many seconds to wait for it at each step."""

    host: str
    port: int
    called_aet: str
    calling_aet: str
    timeout: float

    def __str__(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class SeriesInfo:
    """One series as a C-FIND at SERIES level describes it."""

    study_uid: str
    series_uid: str
    modality: str
    series_number: str
    description: str
    instances: int | None

    @property
    def label(self) -> str:
        """For messages: ``series <number> '<description>' (<uid>)``."""
        number, description = one_line(self.series_number), one_line(self.description)
        return f"series {number or '?'} '{description}' ({one_line(self.series_uid)})"


def status_text(code: int, service_statuses: dict[int, tuple[str, str]]) -> str:
    """``0xA700 (Failure: Refused: Out of Resources)``: a DIMSE status code with its category and meaning."""
    category, meaning = service_statuses.get(code) or GENERAL_STATUS.get(code, ("Unknown", "unknown status"))
    return f"0x{code:04X} ({category}{': ' + meaning if meaning else ''})"


def echo(node: PacsNode) -> None:
    """C-ECHO ``node``; raises ``PacsError`` unless it answers with success."""
    with _association(node, [Verification]) as assoc:
        status = assoc.send_c_echo()
        _check_final(status, node, "C-ECHO", VERIFICATION_SERVICE_CLASS_STATUS)


def find_series(
    node: PacsNode, study_uid: str | None = None, series_uid: str | None = None, patient_id: str | None = None
) -> list[SeriesInfo]:
    """The series matching one of ``study_uid``, ``series_uid`` or ``patient_id`` (Study Root C-FIND).

    A patient's series are found study by study. Raises ``NothingFoundError`` when nothing matches.
    """
    given = [
        (name, value)
        for name, value in (("study", study_uid), ("series", series_uid), ("patient", patient_id))
        if value
    ]
    if len(given) != 1:
        raise ValueError("give exactly one of study_uid, series_uid, patient_id")
    with _association(node, [StudyRootQueryRetrieveInformationModelFind]) as assoc:
        if patient_id:
            studies = [
                match.StudyInstanceUID
                for match in _find(assoc, node, "STUDY", PatientID=patient_id, StudyInstanceUID="")
            ]
        else:
            studies = [study_uid or ""]
        found = [
            _series_info(match, node)
            for study in studies
            for match in _find(
                assoc,
                node,
                "SERIES",
                StudyInstanceUID=study,
                SeriesInstanceUID=series_uid or "",
                Modality="",
                SeriesNumber="",
                SeriesDescription="",
                NumberOfSeriesRelatedInstances="",
            )
        ]
    if not found:
        name, value = given[0]
        raise NothingFoundError(f"{node}: no series found for {name} {value!r}")
    return found


def get_series(
    node: PacsNode, series: SeriesInfo, folder: Path, progress: Callable[[int, int | None], None] | None = None
) -> list[Path]:
    """C-GET every instance of ``series`` into ``folder`` as ``<SOPInstanceUID>.dcm`` (each written atomically).

    ``progress(received, expected)`` is called after each instance; ``expected`` is the C-FIND's instance count
    when known. Raises ``PacsError`` when the retrieval fails or some instances did not arrive.
    """
    received: list[Path] = []
    errors: list[str] = []

    def store(event: evt.Event) -> int:
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        if not UID_PATTERN.fullmatch(sop_uid):
            errors.append(f"instance with the invalid SOPInstanceUID {sop_uid!r}")
            return 0xA900
        try:
            with atomic_path(folder / f"{sop_uid}.dcm") as tmp:
                tmp.write_bytes(event.encoded_dataset())
        except OSError as error:
            errors.append(f"{folder / sop_uid}.dcm: cannot write ({error.strerror or error})")
            return 0xA700
        received.append(folder / f"{sop_uid}.dcm")
        if progress is not None:
            progress(len(received), series.instances)
        return 0x0000

    contexts = [StudyRootQueryRetrieveInformationModelGet, *RETRIEVED_SOP_CLASSES]
    roles = [build_role(uid, scp_role=True) for uid in RETRIEVED_SOP_CLASSES]
    query = _query("SERIES", StudyInstanceUID=series.study_uid, SeriesInstanceUID=series.series_uid)
    what = f"C-GET of {series.label}"
    with _association(node, contexts, roles, [(evt.EVT_C_STORE, store)]) as assoc:
        folder.mkdir(parents=True, exist_ok=True)
        status = Dataset()
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status.get("Status") not in PENDING:
                break
        _check_final(status, node, what, QR_GET_SERVICE_CLASS_STATUS, warning_ok=not errors)
    if errors:
        raise PacsError(f"{what} at {node}: " + "; ".join(errors))
    if not received:
        raise PacsError(f"{what} at {node}: no instance arrived; the series holds no MR, enhanced MR or SEG images")
    return sorted(set(received))


def store_files(node: PacsNode, paths: Sequence[Path]) -> list[str]:
    """C-STORE each DICOM file of ``paths`` to ``node``; the SOPInstanceUIDs stored.

    Raises ``PacsError`` naming every file the server did not accept, with its status.
    """
    if not paths:
        return []
    headers = {path: dcmread(path, stop_before_pixels=True) for path in paths}
    syntaxes: dict[str, set[str]] = {}
    for header in headers.values():
        syntaxes.setdefault(header.SOPClassUID, set(UNCOMPRESSED)).add(header.file_meta.TransferSyntaxUID)
    failures, stored = [], []
    with _association(node, list(syntaxes.items())) as assoc:
        for path, header in headers.items():
            try:
                status = assoc.send_c_store(path)
            except ValueError:  # no accepted presentation context for its SOP class and transfer syntax
                syntax = header.file_meta.TransferSyntaxUID
                failures.append(f"{path}: {node} accepts no {header.SOPClassUID.name} in {syntax.name}")
                continue
            code = status.get("Status")
            if code is None:
                raise PacsError(f"C-STORE of {path} to {node}: no answer (association aborted or timed out)")
            if STORAGE_SERVICE_CLASS_STATUS.get(code, ("Failure",))[0] in ("Success", "Warning"):
                stored.append(str(header.SOPInstanceUID))
            else:
                failures.append(f"{path}: status {status_text(code, STORAGE_SERVICE_CLASS_STATUS)}")
    if failures:
        summary = f"C-STORE to {node} failed for {len(failures)} of {len(paths)} files ({len(stored)} stored):"
        raise PacsError("\n  ".join([summary, *failures]))
    return stored


@contextmanager
def _association(
    node: PacsNode,
    contexts: Sequence[str | tuple[str, Sequence[str]]],
    roles: Sequence = (),
    handlers: Sequence = (),
) -> Iterator[Association]:
    """An association with ``node`` proposing ``contexts`` (a SOP class, or one with its transfer syntaxes)."""
    ae = AE(ae_title=node.calling_aet)
    for timeout in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, timeout, node.timeout)
    for context in contexts:
        uid, transfer_syntaxes = context if isinstance(context, tuple) else (context, UNCOMPRESSED)
        ae.add_requested_context(uid, sorted(transfer_syntaxes))
    # Whether the connection opened, and the server's answer to the association request, to explain a failure.
    answer: dict[str, object] = {}

    def connected(event: evt.Event) -> None:
        answer["connected"] = True

    def answered(event: evt.Event) -> None:
        answer["primitive"] = event.primitive

    try:
        assoc = ae.associate(
            node.host,
            node.port,
            ae_title=node.called_aet,
            ext_neg=list(roles),
            evt_handlers=[(evt.EVT_CONN_OPEN, connected), (evt.EVT_ACSE_RECV, answered), *handlers],
        )
    except OSError as error:  # the host name does not resolve
        raise PacsError(_cannot_connect(node, error)) from None
    if not assoc.is_established:
        raise PacsError(_association_failure(node, assoc, answer))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _association_failure(node: PacsNode, assoc: Association, answer: dict) -> str:
    calling = f"(calling AE title {node.calling_aet!r}, called AE title {node.called_aet!r})"
    if not answer.get("connected"):
        try:
            socket.create_connection((node.host, node.port), timeout=min(node.timeout, PROBE_TIMEOUT_S)).close()
        except OSError as error:
            return _cannot_connect(node, error)
        return _cannot_connect(node, None)
    primitive = answer.get("primitive")
    if assoc.is_rejected and primitive is not None:
        return (
            f"{node} rejected the association {calling}: {primitive.reason_str} "
            f"({primitive.result_str}, from the {primitive.source_str}); the PACS must know the calling AE title "
            "and answer to the called one"
        )
    if assoc.is_rejected:
        return f"{node} rejected the association {calling}"
    return (
        f"{node} did not accept the association {calling}: it aborted, timed out after {node.timeout:g} s, "
        "or accepted none of the proposed services"
    )


def _cannot_connect(node: PacsNode, error: OSError | None) -> str:
    reason = "the connection failed" if error is None else error.strerror or str(error) or type(error).__name__
    hint = "check the host name" if isinstance(error, socket.gaierror) else "is the PACS running there, at that port?"
    return f"cannot connect to {node.host}:{node.port}: {reason}; {hint}"


def _query(level: str, **keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def _find(assoc: Association, node: PacsNode, level: str, **keys: str) -> list[Dataset]:
    matches, status = [], Dataset()
    for status, identifier in assoc.send_c_find(_query(level, **keys), StudyRootQueryRetrieveInformationModelFind):
        if status.get("Status") in PENDING and identifier is not None:
            matches.append(identifier)
    _check_final(status, node, f"C-FIND at {level} level", QR_FIND_SERVICE_CLASS_STATUS)
    return matches


def _series_info(match: Dataset, node: PacsNode) -> SeriesInfo:
    """The series a C-FIND answered; its UIDs name folders, so they must be plain UIDs."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not UID_PATTERN.fullmatch(str(match.get(keyword, ""))):
            raise PacsError(f"{node} answered a C-FIND with the invalid {keyword} {match.get(keyword)!r}")
    count = str(match.get("NumberOfSeriesRelatedInstances", "") or "").strip()
    return SeriesInfo(
        study_uid=str(match.StudyInstanceUID),
        series_uid=str(match.SeriesInstanceUID),
        modality=str(match.get("Modality", "") or ""),
        series_number=str(match.get("SeriesNumber", "") or ""),
        description=str(match.get("SeriesDescription", "") or ""),
        instances=int(count) if count.isdigit() else None,
    )


def _check_final(
    status: Dataset, node: PacsNode, what: str, statuses: dict[int, tuple[str, str]], warning_ok: bool = True
) -> None:
    """Raise ``PacsError`` unless ``status`` (a final response) is a success (or, with ``warning_ok``, a warning)."""
    code = status.get("Status")
    if code is None:
        raise PacsError(f"{what} at {node}: no answer within {node.timeout:g} s (association aborted or timed out)")
    category = (statuses.get(code) or GENERAL_STATUS.get(code, ("Failure",)))[0]
    if category == "Success" or (
        warning_ok and category == "Warning" and not status.get("NumberOfFailedSuboperations")
    ):
        return
    counts = ", ".join(
        f"{status.get(f'NumberOf{kind}Suboperations')} {kind.lower()}"
        for kind in ("Completed", "Failed", "Warning")
        if status.get(f"NumberOf{kind}Suboperations") is not None
    )
    comment = status.get("ErrorComment")
    detail = "".join(f"; {text}" for text in (counts and f"sub-operations: {counts}", comment) if text)
    raise PacsError(f"{what} at {node} failed: status {status_text(code, statuses)}{detail}")
