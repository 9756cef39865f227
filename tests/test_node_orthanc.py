"""``python -m pipeline serve`` as a process, with a real Orthanc pushing to it (REST ``/modalities/.../store``) and
receiving the SEGs back: one study end to end, 20 series by 4 concurrent associations, and the same with the node
killed (SIGKILL) in the middle and restarted. Skipped where Orthanc is not installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from orthanc_server import ORTHANC_AET, Orthanc, free_port, running_orthanc
from tiny_bundle import THRESHOLD_NETWORK, save_threshold_network

from pipeline.node.journal import read_journal
from pipeline.phantoms.dicom_series import write_phantom_series

NODE_AET = "BRAINSEG"
WAIT_S = 180.0


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def node_config(tmp_path, orthanc) -> Path:
    """A node config that accepts Orthanc, sends the SEGs back to it, and runs the tiny threshold network; Orthanc
    knows the node as modality ``brainseg``."""
    models = tmp_path / "models"
    models.mkdir()
    save_threshold_network(models / "model.pt")
    port = free_port()
    config = {
        "ae_title": NODE_AET,
        "port": port,
        "host": "127.0.0.1",
        "work_dir": "work",
        "callers": {ORTHANC_AET: {"host": "127.0.0.1", "port": orthanc.dicom_port}},
        "quiet_seconds": 60,  # series complete when Orthanc releases the association
        "retry": {"first_seconds": 0.5, "max_seconds": 2},
        "model": {
            "device": "cpu",
            "overrides": {"ckpt_dir": str(models), "network_def": THRESHOLD_NETWORK, "image_size": 32},
        },
    }
    (tmp_path / "node.json").write_text(json.dumps(config))
    orthanc.rest("PUT", "/modalities/brainseg", {"AET": NODE_AET, "Host": "127.0.0.1", "Port": port})
    return tmp_path / "node.json"


class NodeProcess:
    """``python -m pipeline serve --config CONFIG`` in its own process, its log in ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        started = log.read_text().count("listening as") if log.exists() else 0
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "serve", "--config", str(config)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        wait_for(
            lambda: log.read_text().count("listening as") > started or self.process.poll() is not None,
            "the node to listen",
        )
        assert self.process.poll() is None, log.read_text()[-3000:]

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def start_node(tmp_path) -> Iterator[Callable[[Path], NodeProcess]]:
    nodes: list[NodeProcess] = []

    def start(config: Path) -> NodeProcess:
        nodes.append(NodeProcess(config, tmp_path / "node.log"))
        return nodes[-1]

    yield start
    for node in nodes:
        if node.process.poll() is None:
            node.kill()


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S:g} s for {what}")
        time.sleep(0.2)


def upload_phantoms(orthanc: Orthanc, folder: Path, patients: int, slices: int, seed: int) -> dict[str, str]:
    """Phantom studies stored in Orthanc; Orthanc's study id -> the source SeriesInstanceUID."""
    studies = {}
    for path in write_phantom_series(folder, patients=patients, slices=slices, size=128, seed=seed):
        answer = orthanc.rest_bytes("/instances", path.read_bytes())
        studies[answer["ParentStudy"]] = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
    return studies


def segs_by_source(orthanc: Orthanc, studies: dict[str, str]) -> dict[str, list[str]]:
    """For each source series of ``studies``: the SOPInstanceUIDs of the SEG instances Orthanc holds for it."""
    found: dict[str, list[str]] = {series: [] for series in studies.values()}
    for study in studies:
        for series in orthanc.rest("GET", f"/studies/{study}/series"):
            if series["MainDicomTags"].get("Modality") != "SEG":
                continue
            for instance in series["Instances"]:
                tags = orthanc.rest("GET", f"/instances/{instance}/tags?simplify")
                found[tags["ReferencedSeriesSequence"][0]["SeriesInstanceUID"]].append(tags["SOPInstanceUID"])
    return found


def store_jobs(orthanc: Orthanc, studies: list[str], associations: int) -> list[str]:
    """Orthanc pushes ``studies`` to the node in ``associations`` concurrent jobs (one association each)."""
    jobs = []
    for index in range(associations):
        body = {"Resources": studies[index::associations], "Asynchronous": True}
        jobs.append(orthanc.rest("POST", "/modalities/brainseg/store", body)["ID"])
    return jobs


def finished(orthanc: Orthanc, job: str) -> dict:
    """Orthanc's description of ``job`` once it has succeeded or failed."""
    wait_for(lambda: orthanc.rest("GET", f"/jobs/{job}")["State"] in ("Success", "Failure"), f"Orthanc's job {job}")
    return orthanc.rest("GET", f"/jobs/{job}")


def test_orthanc_pushes_a_study_and_gets_a_valid_seg_back_referencing_every_instance(
    orthanc, node_config, start_node, tmp_path
):
    node = start_node(node_config)
    studies = upload_phantoms(orthanc, tmp_path / "phantom", patients=1, slices=4, seed=11)
    ((study, source_series),) = studies.items()
    orthanc.rest("POST", "/modalities/brainseg/store", {"Resources": [study], "Synchronous": True})
    wait_for(lambda: segs_by_source(orthanc, studies)[source_series], "the SEG in Orthanc")

    (seg_series,) = [
        s for s in orthanc.rest("GET", f"/studies/{study}/series") if s["MainDicomTags"]["Modality"] == "SEG"
    ]
    seg_file = tmp_path / "seg.dcm"
    seg_file.write_bytes(requests.get(f"{orthanc.url}/instances/{seg_series['Instances'][0]}/file", timeout=20).content)
    seg = pydicom.dcmread(seg_file)
    sources = {pydicom.dcmread(path).SOPInstanceUID for path in (tmp_path / "phantom").rglob("*.dcm")}
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source_series
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == sources
    if shutil.which("dciodvfy"):
        result = subprocess.run(["dciodvfy", str(seg_file)], capture_output=True, text=True, timeout=120)
        report = (result.stdout + result.stderr).splitlines()
        assert report[0] == "Segmentation"
        assert [line for line in report if line.startswith("Error")] == []

    status = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--config", str(node_config), "--status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert f"running (process {node.process.pid})" in status.stdout and "done: 1 sent, 0 failed" in status.stdout
    assert node.terminate() == 0
    log = node.log.read_text()
    (line,) = [line for line in log.splitlines() if f"series {source_series} " in line]
    assert f"from {ORTHANC_AET}: 4 instances received, segmented in " in line and "sent to ORTHANC@127.0.0.1" in line
    assert log.rstrip().endswith("stopped")


def test_20_series_by_4_concurrent_associations_give_20_segs_none_lost_none_duplicated(
    orthanc, node_config, start_node, tmp_path
):
    start_node(node_config)
    studies = upload_phantoms(orthanc, tmp_path / "phantom", patients=20, slices=3, seed=12)
    store_jobs(orthanc, list(studies), associations=4)
    wait_for(lambda: all(segs_by_source(orthanc, studies).values()), "20 SEGs in Orthanc")
    assert [len(segs) for segs in segs_by_source(orthanc, studies).values()] == [1] * 20


def test_a_node_killed_in_the_middle_and_restarted_still_gives_exactly_one_seg_per_series(
    orthanc, node_config, start_node, tmp_path
):
    node = start_node(node_config)
    studies = upload_phantoms(orthanc, tmp_path / "phantom", patients=20, slices=3, seed=13)
    jobs = store_jobs(orthanc, list(studies), associations=4)
    work = node_config.parent / "work"
    wait_for(lambda: sum(read_journal(work)[0].values()) >= 5, "5 of the 20 series to arrive")
    node.kill()  # while Orthanc is still pushing the others
    start_node(node_config)
    assert "Failure" in [finished(orthanc, job)["State"] for job in jobs]  # the kill cut pushes short
    # The studies pushed again, as an operator or a routing rule does: what arrived before is acknowledged once more.
    assert [finished(orthanc, job)["State"] for job in store_jobs(orthanc, list(studies), 4)] == ["Success"] * 4
    wait_for(lambda: all(segs_by_source(orthanc, studies).values()), "20 SEGs in Orthanc")
    assert [len(segs) for segs in segs_by_source(orthanc, studies).values()] == [1] * 20
    assert read_journal(work)[0]["sent"] == 20
