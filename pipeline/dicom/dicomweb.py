"""A DICOMweb client over ``dicomweb-client``: QIDO-RS to find series, WADO-RS to retrieve them, STOW-RS to store.

Credentials come from the environment variable ``PIPELINE_DICOMWEB_AUTH`` or a file, never from the command
line: the text is ``USER:PASSWORD`` (HTTP basic) or ``Bearer TOKEN``. They are sent to the server and nowhere
else; no message, log or record holds them. Every failure a user can act on is one ``DicomwebError`` line naming
the server: no connection, credentials refused, a failed request with its HTTP status.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset

from pipeline.atomic import atomic_path
from pipeline.dicom.pacs import SeriesInfo
from pipeline.outputs import output_path, safe_name
from pipeline.user_errors import UserError

AUTH_ENV = "PIPELINE_DICOMWEB_AUTH"
_SERIES_FIELDS = ["Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances"]


class DicomwebError(UserError, ConnectionError):
    """The DICOMweb server could not be reached, refused the credentials, or answered a request with an error."""


@dataclass(frozen=True)
class Credentials:
    """HTTP basic credentials or a bearer token, and where they were read (for messages: never the secret)."""

    source: str
    user: str | None
    secret: str = field(repr=False)

    @property
    def kind(self) -> str:
        """``basic`` or ``bearer``."""
        return "bearer" if self.user is None else "basic"


@dataclass(frozen=True)
class DicomwebServer:
    """A DICOMweb service root (``https://host/dicom-web``), the credentials used with it, and the client."""

    url: str
    credentials: Credentials | None
    client: DICOMwebClient = field(repr=False)

    def __str__(self) -> str:
        return self.url


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host and without credentials in it; ``DicomwebError`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomwebError(f"{url!r} is not a DICOMweb URL: give http(s)://host[:port]/path of the service root")
    if parts.username or parts.password:
        raise DicomwebError(
            f"the DICOMweb URL of {parts.hostname} holds credentials; put them in ${AUTH_ENV} or an auth file instead"
        )
    return url.rstrip("/")


def read_credentials(auth_file: Path | None = None) -> Credentials | None:
    """The credentials in ``auth_file`` (its first line), else in ``$PIPELINE_DICOMWEB_AUTH``, else None.

    Raises ``DicomwebError`` for a file that cannot be read, one that others may read, or text that is neither
    ``USER:PASSWORD`` nor ``Bearer TOKEN`` (the message names where it was read, never what it holds).
    """
    if auth_file is not None:
        source = str(auth_file)
        try:
            mode = auth_file.stat().st_mode
        except OSError as error:
            raise DicomwebError(f"{auth_file}: cannot read the DICOMweb credentials ({error.strerror})") from None
        # Checked before it is read: a pipe or a device is never opened.
        if not stat.S_ISREG(mode):
            raise DicomwebError(f"{auth_file}: not a regular file; it is not opened")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DicomwebError(f"{auth_file}: other users may read these credentials; chmod 600 it")
        try:
            text = auth_file.read_text(encoding="utf-8").split("\n", 1)[0].strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise DicomwebError(f"{auth_file}: cannot read the DICOMweb credentials ({reason})") from None
    elif os.environ.get(AUTH_ENV):
        source, text = f"${AUTH_ENV}", os.environ[AUTH_ENV].strip()
    else:
        return None
    scheme, _, token = text.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Credentials(source, None, token.strip())
    user, colon, password = text.partition(":")
    if colon and user:
        return Credentials(source, user, password)
    raise DicomwebError(f"{source}: DICOMweb credentials must be USER:PASSWORD or 'Bearer TOKEN'")


def connect(url: str, credentials: Credentials | None, timeout: float) -> DicomwebServer:
    """A client of the DICOMweb service at ``url`` that sends ``credentials`` with every request."""
    url = check_url(url)
    session = requests.Session()
    if credentials is not None and credentials.user is not None:
        session.auth = (credentials.user, credentials.secret)
    elif credentials is not None:
        session.headers["Authorization"] = f"Bearer {credentials.secret}"
    return DicomwebServer(url, credentials, DICOMwebClient(url, session=session, timeout=timeout))


def find_series(
    server: DicomwebServer, study_uid: str | None = None, series_uid: str | None = None, patient_id: str | None = None
) -> list[SeriesInfo]:
    """The series matching one of ``study_uid``, ``series_uid`` or ``patient_id`` (QIDO-RS).

    Raises ``DicomwebError`` when the search fails or nothing matches.
    """
    keys = (("study", study_uid), ("series", series_uid), ("patient", patient_id))
    given = [(name, value) for name, value in keys if value]
    if len(given) != 1:
        raise ValueError("give exactly one of study_uid, series_uid, patient_id")
    filters = {"SeriesInstanceUID": series_uid} if series_uid else {"PatientID": patient_id} if patient_id else {}
    with _answering(server, "QIDO-RS search for series"):
        found = server.client.search_for_series(
            study_instance_uid=study_uid, fields=_SERIES_FIELDS, search_filters=filters, get_remaining=True
        )
    series = [_series_info(Dataset.from_json(item)) for item in found]
    if not series:
        name, value = given[0]
        raise DicomwebError(f"{server}: no series found for {name} {value!r}")
    return series


def retrieve_series(server: DicomwebServer, series: SeriesInfo, folder: Path) -> list[Path]:
    """WADO-RS retrieval of every instance of ``series`` into ``folder`` as ``<SOPInstanceUID>.dcm`` (names made
    by ``safe_name``, each file written atomically); the files written."""
    written = []
    with _answering(server, f"WADO-RS retrieval of {series.label}"):
        for dataset in server.client.iter_series(series.study_uid, series.series_uid):
            path = output_path(folder, f"{safe_name(dataset.SOPInstanceUID)}.dcm")
            with atomic_path(path) as temporary:
                dataset.save_as(temporary, enforce_file_format=True)
            written.append(path)
    if not written:
        raise DicomwebError(f"{server}: WADO-RS retrieval of {series.label} returned no instance")
    return sorted(written)


def store_files(server: DicomwebServer, paths: Sequence[Path]) -> list[str]:
    """STOW-RS of the DICOM files ``paths``; the SOPInstanceUIDs stored. Raises ``DicomwebError`` naming each
    instance the server refused."""
    if not paths:
        return []
    datasets = [pydicom.dcmread(path) for path in paths]
    with _answering(server, f"STOW-RS of {len(paths)} instances"):
        answer = server.client.store_instances(datasets)
    failed = [str(item.ReferencedSOPInstanceUID) for item in answer.get("FailedSOPSequence", [])]
    if failed:
        raise DicomwebError(f"{server}: STOW-RS refused {len(failed)} of {len(paths)} instances: {', '.join(failed)}")
    return [str(dataset.SOPInstanceUID) for dataset in datasets]


@contextmanager
def _answering(server: DicomwebServer, what: str) -> Iterator[None]:
    """Turn what ``requests`` raises for ``what`` into one ``DicomwebError`` line that names the server."""
    try:
        yield
    except requests.HTTPError as error:
        response = error.response
        code = response.status_code if response is not None else 0
        reason = f"HTTP {code} {response.reason if response is not None else ''}".strip()
        if code in (401, 403):
            if server.credentials is None:
                hint = f"the server needs credentials: put them in ${AUTH_ENV} or an auth file"
            else:
                hint = f"the server refused the {server.credentials.kind} credentials from {server.credentials.source}"
            raise DicomwebError(f"{server}: {what} refused ({reason}): {hint}") from None
        raise DicomwebError(f"{server}: {what} failed ({reason})") from None
    except requests.ConnectionError as error:
        raise DicomwebError(f"cannot connect to {server}: {_first_reason(error)}") from None
    except requests.Timeout:
        raise DicomwebError(f"{server}: {what}: no answer in time") from None


def _first_reason(error: BaseException) -> str:
    """The innermost reason of a connection error (``Connection refused``), without the request's details."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split()) or type(error).__name__


def _series_info(found: Dataset) -> SeriesInfo:
    count = str(found.get("NumberOfSeriesRelatedInstances", "") or "").strip()
    return SeriesInfo(
        study_uid=str(found.get("StudyInstanceUID", "")),
        series_uid=str(found.get("SeriesInstanceUID", "")),
        modality=str(found.get("Modality", "") or ""),
        series_number=str(found.get("SeriesNumber", "") or ""),
        description=str(found.get("SeriesDescription", "") or ""),
        instances=int(count) if count.isdigit() else None,
    )
