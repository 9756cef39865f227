"""A real Orthanc (Debian's ``orthanc``, with ``orthanc-dicomweb`` when asked) on free ports of 127.0.0.1, with a
temporary configuration and storage, for the tests that talk to a DICOM server. Tests skip, saying why, where it
is not installed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from pipeline.dicom.pacs import PacsError, PacsNode, echo

ORTHANC_AET = "ORTHANC"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc: its DICOM port, its REST API (with the test user's credentials) and its folder."""

    folder: Path
    dicom_port: int
    http_port: int
    auth: tuple[str, str] | None
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def node(self, calling_aet: str) -> PacsNode:
        """Orthanc as a DICOM node called by ``calling_aet``."""
        return PacsNode("127.0.0.1", self.dicom_port, ORTHANC_AET, calling_aet, TIMEOUT_S)

    def rest(self, method: str, path: str, body: object = None) -> object:
        """The JSON answer of Orthanc's REST API to ``method path`` (with ``body`` as JSON)."""
        response = requests.request(method, self.url + path, json=body, auth=self.auth, timeout=TIMEOUT_S)
        response.raise_for_status()
        return response.json() if response.content else None

    def upload(self, paths: list[Path]) -> None:
        """Store the DICOM files ``paths`` through the REST API."""
        for path in paths:
            self.rest_bytes("/instances", path.read_bytes())

    def rest_bytes(self, path: str, data: bytes) -> object:
        response = requests.post(self.url + path, data=data, auth=self.auth, timeout=TIMEOUT_S)
        response.raise_for_status()
        return response.json()

    def log(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")[-3000:]


def require_orthanc(dicomweb: bool = False) -> str:
    """The Orthanc executable; skips the test where it (or, with ``dicomweb``, the DICOMweb plugin) is missing."""
    executable = shutil.which("Orthanc")
    if executable is None:
        pytest.skip("Orthanc is not on PATH: install the Debian package `orthanc` to run the DICOM server tests")
    if dicomweb and not DICOMWEB_PLUGIN.is_file():
        pytest.skip(f"{DICOMWEB_PLUGIN} is missing: install the Debian package `orthanc-dicomweb`")
    return executable


@contextmanager
def running_orthanc(
    folder: Path,
    modalities: dict[str, list] | None = None,
    users: dict[str, str] | None = None,
    dicomweb: bool = False,
) -> Iterator[Orthanc]:
    """Start Orthanc with ``modalities`` (name: [AET, host, port]) it may send to, REST and DICOMweb protected by
    ``users`` (name: password) when given, and the DICOMweb plugin when ``dicomweb``; stop it at the end."""
    executable = require_orthanc(dicomweb)
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "pipeline-tests",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": ORTHANC_AET,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "DicomCheckCalledAet": False,
        "DicomModalities": modalities or {},
        "ConcurrentJobs": 4,
        "DicomScuTimeout": 30,
        "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
        "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
        "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([executable, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    first_user = next(iter(users.items())) if users else None
    orthanc = Orthanc(folder, dicom_port, http_port, first_user, process)
    try:
        _wait_until_up(orthanc)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_up(orthanc: Orthanc) -> None:
    """Wait until Orthanc answers a C-ECHO; fail with the end of its log if it exits or takes over a minute."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if orthanc.process.poll() is not None:
            pytest.fail(f"Orthanc exited with code {orthanc.process.returncode}:\n{orthanc.log()}")
        try:
            return echo(PacsNode("127.0.0.1", orthanc.dicom_port, ORTHANC_AET, "PROBE", timeout=2))
        except PacsError:
            time.sleep(0.2)
    pytest.fail(f"Orthanc did not answer a C-ECHO on port {orthanc.dicom_port} within 60 s:\n{orthanc.log()}")
