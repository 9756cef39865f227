"""The DICOM node in this process: what it answers to each instance, what its journal says, where it writes, how it
retries a send and finishes after a stop. A pynetdicom SCU pushes, a pynetdicom SCP stands in for the PACS; the
model is the tiny threshold network. The end-to-end runs against Orthanc are in ``tests/test_node_orthanc.py``."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from orthanc_server import free_port
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import SegmentationStorage, Verification
from tiny_bundle import THRESHOLD_NETWORK, save_threshold_network

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.inference.predictor import BundlePredictor
from pipeline.inference.slice_segmenter import SliceSegmenter
from pipeline.node.config import load_node_config
from pipeline.node.journal import FAILED, SENT, Journal, read_journal
from pipeline.node.scp import NodeListenError
from pipeline.node.service import DicomNode
from pipeline.node.status import status_report
from pipeline.outputs import safe_name

NODE_AET, PACS_AET = "BRAINSEG", "PACS"
WAIT_S = 180.0  # a deadline for slow, shared machines, not a timing


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> SliceSegmenter:
    folder = tmp_path_factory.mktemp("models")
    save_threshold_network(folder / "model.pt")
    overrides = {
        "ckpt_dir": str(folder),
        "network_def": THRESHOLD_NETWORK,
        "image_size": 32,
        "device": "$torch.device('cpu')",
    }
    return BundlePredictor(default_bundle_dir(), overrides).build().slice_segmenter


class Pacs:
    """A pynetdicom Storage SCP standing in for the PACS the SEGs go to; started on ``port`` when asked."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[Dataset] = []
        self._server = None

    def start(self) -> None:
        ae = AE(PACS_AET)
        ae.add_supported_context(SegmentationStorage, ExplicitVRLittleEndian)
        ae.add_supported_context(Verification)

        def store(event: evt.Event) -> int:
            self.received.append(event.dataset)
            return 0x0000

        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


@pytest.fixture
def pacs() -> Iterator[Pacs]:
    server = Pacs(free_port())
    server.start()
    yield server
    server.stop()


def write_config(folder: Path, node_port: int, pacs_port: int, **settings: object) -> Path:
    """A node config in ``folder/node.json``: callers PACS (results back to ``pacs_port``), short retries."""
    config = {
        "ae_title": NODE_AET,
        "port": node_port,
        "host": "127.0.0.1",
        "work_dir": "work",
        "callers": {PACS_AET: {"host": "127.0.0.1", "port": pacs_port}},
        "quiet_seconds": 30,
        "retry": {"first_seconds": 0.2, "max_seconds": 0.5},
        "timeout_seconds": 10,
        **settings,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "node.json").write_text(json.dumps(config))
    return folder / "node.json"


@pytest.fixture
def start_node(tmp_path, segmenter) -> Iterator[Callable[..., DicomNode]]:
    """Start a node on a config written by ``write_config``; every node started is stopped at the end."""
    nodes: list[DicomNode] = []

    def start(config_path: Path) -> DicomNode:
        node = DicomNode(load_node_config(config_path), segmenter)
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.scp.stop()
        node._join()


def mr_slices(
    count: int = 3, positions: list[float] | None = None, spacings: list[float] | None = None, **uids: str
) -> list[Dataset]:
    """A small MR series (16x16, a bright square on each slice) stacked along z."""
    study, series, frame = uids.get("study", generate_uid()), uids.get("series", generate_uid()), generate_uid()
    positions = positions if positions is not None else [2.0 * index for index in range(count)]
    datasets = []
    for index, z in enumerate(positions):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID, ds.Modality = "Node^Test", "NODE01", "MR"
        ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "19700101", "F", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 1, index + 1, "T1"
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, z], [1, 0, 0, 0, 1, 0]
        spacing = spacings[index] if spacings else 1.0
        ds.PixelSpacing, ds.SliceThickness = [spacing, spacing], 2
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = np.full((16, 16), 10, dtype=np.uint16)
        pixels[4:12, 4:12] = 1000
        ds.PixelData = pixels.tobytes()
        datasets.append(ds)
    return datasets


def push(port: int, items: list[Dataset | Path], calling: str = PACS_AET, release: bool = True) -> list[int]:
    """C-STORE ``items`` (data sets, or files sent as they are) to the node; their statuses."""
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in (MRImageStorage, BasicTextSRStorage):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(item).Status) for item in items]
    assoc.release() if release else assoc.abort()
    return statuses


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S:g} s for {what}")
        time.sleep(0.1)


def journal_states(config_path: Path) -> dict[str, int]:
    return read_journal(load_node_config(config_path).work_dir)[0]


def test_a_pushed_series_is_segmented_and_its_seg_sent_back_once_referencing_every_instance(
    tmp_path, pacs, start_node, caplog
):
    config = write_config(tmp_path, free_port(), pacs.port)
    node = start_node(config)
    series = mr_slices(3)
    with caplog.at_level("INFO", logger="pipeline.node"):
        assert push(node.config.port, series) == [0, 0, 0]
        wait_for(lambda: journal_states(config)[SENT] == 1, "the SEG to be sent")
    (seg,) = pacs.received
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == series[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in series
    }
    assert seg.StudyInstanceUID == series[0].StudyInstanceUID
    (line,) = [record.getMessage() for record in caplog.records if "sent to" in record.getMessage()]
    assert line.startswith(f"series {series[0].SeriesInstanceUID} from {PACS_AET}: 3 instances received, segmented in ")
    assert line.endswith(f"sent to {PACS_AET}@127.0.0.1:{pacs.port}")
    # Pushed again (a sender retrying after a failed association): acknowledged, nothing segmented or sent again.
    assert push(node.config.port, series) == [0, 0, 0]
    time.sleep(1.5)  # three polls of the worker and the sender, which find nothing to do
    assert len(pacs.received) == 1 and journal_states(config)[SENT] == 1


def test_bad_instances_and_series_get_their_status_and_journal_entry_and_the_node_keeps_serving(
    tmp_path, pacs, start_node
):
    config = write_config(tmp_path, free_port(), pacs.port)
    node = start_node(config)
    corrupt = tmp_path / "corrupt.dcm"
    (source,) = mr_slices(1)
    pydicom.dcmwrite(corrupt, source, enforce_file_format=True)
    data = corrupt.read_bytes()
    start = data.index(b"\x20\x00\x0d\x00UI")  # StudyInstanceUID, after the SOP class and instance UIDs
    corrupt.write_bytes(data[: start + 6] + b"\xff\xff" + data[start + 8 : start + 60])  # its length overruns the end
    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.SOPClassUID, report.SOPInstanceUID = BasicTextSRStorage, generate_uid()
    report.StudyInstanceUID, report.SeriesInstanceUID, report.Modality = generate_uid(), generate_uid(), "SR"
    (nan_slice,) = mr_slices(1)
    values = np.ones((16, 16), dtype=np.float32)
    values[3, 3] = np.nan
    del nan_slice.PixelData
    nan_slice.BitsAllocated, nan_slice.FloatPixelData = 32, values.tobytes()
    gap = mr_slices(positions=[0.0, 2.0, 6.0, 8.0])
    mixed = mr_slices(spacings=[1.0, 1.0, 0.5])
    good = mr_slices(3)

    statuses = push(node.config.port, [corrupt, report, nan_slice, *gap, *mixed, *good])
    assert statuses[:3] == [0xC210, 0x0000, 0xA900]
    assert statuses[3:] == [0] * (len(gap) + len(mixed) + len(good))
    wait_for(lambda: journal_states(config)[SENT] == 1 and journal_states(config)[FAILED] == 2, "the series to end")

    (seg,) = pacs.received
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == good[0].SeriesInstanceUID
    _, _, failures = read_journal(load_node_config(config).work_dir)
    by_uid = {event.sop_uid or event.series_uid: event for event in failures}
    assert by_uid[gap[0].SeriesInstanceUID].kind == FAILED
    assert "uneven slice positions" in by_uid[gap[0].SeriesInstanceUID].detail
    assert "slices of different pixel spacings" in by_uid[mixed[0].SeriesInstanceUID].detail
    assert by_uid[source.SOPInstanceUID].detail.startswith("the data set cannot be decoded: no ")
    assert by_uid[nan_slice.SOPInstanceUID].detail == "1 pixels are NaN or infinite"
    assert report.SOPInstanceUID not in by_uid  # ignored, not a failure, and recorded as such:
    with sqlite3.connect(load_node_config(config).work_dir / "journal.sqlite") as db:
        ignored = db.execute("SELECT kind, detail FROM events WHERE sop_uid = ?", (report.SOPInstanceUID,)).fetchall()
    assert ignored == [("ignored", "Basic Text SR Storage is not segmented here")]
    assert "done: 1 sent, 2 failed" in status_report(load_node_config(config))[1]
    assert push(node.config.port, mr_slices(2)) == [0, 0]  # still serving


def test_other_objects_are_refused_when_the_config_says_reject(tmp_path, pacs, start_node):
    config = write_config(tmp_path, free_port(), pacs.port, segment={"other_objects": "reject"})
    node = start_node(config)
    report = mr_slices(1)[0]
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    assert push(node.config.port, [report]) == [0x0122]
    _, _, (event,) = read_journal(load_node_config(config).work_dir)
    assert (event.kind, event.detail) == ("rejected", "Basic Text SR Storage is not segmented here")


def test_an_unknown_calling_ae_title_is_refused_at_association(tmp_path, pacs, start_node):
    node = start_node(write_config(tmp_path, free_port(), pacs.port))
    ae = AE("STRANGER")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", node.config.port, ae_title=NODE_AET)
    assert assoc.is_rejected
    assert not any((node.config.work_dir / "spool").iterdir())


def test_uids_that_look_like_paths_never_lead_outside_the_node_folders(tmp_path, pacs, start_node):
    config = write_config(tmp_path / "node", free_port(), pacs.port)
    node = start_node(config)
    hostile = mr_slices(2, study="../../..", series="../../escaped")
    assert push(node.config.port, hostile) == [0, 0]
    wait_for(lambda: journal_states(config)[SENT] == 1, "the SEG to be sent")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["node"]
    work = node.config.work_dir
    written = [path for path in work.rglob("*") if path.is_file()]
    assert all(path.resolve().is_relative_to(work.resolve()) for path in written)
    study, series = safe_name("../../.."), safe_name("../../escaped")
    assert study.startswith("_.._.._..-") and series.startswith("_.._.._escaped-")
    assert len(list((work / "spool" / study / series).glob("*.dcm"))) == 2
    assert (work / "results" / study / f"{series}_seg.dcm").is_file()
    (seg,) = pacs.received
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == "../../escaped"


def test_a_failed_send_is_retried_with_back_off_until_stored_and_stored_once(tmp_path, start_node):
    pacs = Pacs(free_port())  # not listening yet
    config = write_config(tmp_path, free_port(), pacs.port)
    node = start_node(config)
    assert push(node.config.port, mr_slices(3)) == [0, 0, 0]

    def retried() -> bool:
        _, pending, _ = read_journal(node.config.work_dir)
        return bool(pending) and pending[0].attempts >= 2

    wait_for(retried, "two failed sends")
    _, lines = status_report(load_node_config(config))
    assert "queue: 0 receiving, 0 to segment, 1 to send" in lines
    assert any("segmented" in line and "cannot connect to 127.0.0.1" in line for line in lines)
    pacs.start()
    try:
        wait_for(lambda: journal_states(config)[SENT] == 1, "the SEG to be sent")
        time.sleep(1.5)  # three polls of the sender, which finds nothing left to send
        assert len(pacs.received) == 1
    finally:
        pacs.stop()


def test_a_stopped_node_parks_a_series_still_receiving_and_a_restart_finishes_it(tmp_path, pacs, start_node):
    config = write_config(tmp_path, free_port(), pacs.port)
    node = start_node(config)
    series = mr_slices(3)
    assert push(node.config.port, series[:2], release=False) == [0, 0]  # aborted: the series is not complete
    node.stop()
    assert journal_states(config)["receiving"] == 1 and pacs.received == []

    restarted = start_node(write_config(tmp_path, node.config.port, pacs.port, quiet_seconds=0.5))
    assert push(restarted.config.port, series) == [0, 0, 0]  # the sender resends the whole series
    wait_for(lambda: journal_states(config)[SENT] == 1, "the SEG to be sent")
    (seg,) = pacs.received
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"colour": "blue"}, "unknown key 'colour'"),
        ({"callers": {"PACS": None}}, "send_to is 'sender' but caller 'PACS' has no host and port"),
        ({"segment": {"other_objects": "drop"}}, "segment.other_objects must be 'ignore' or 'reject', got 'drop'"),
        ({"send_to": {"url": "https://user:secret@pacs/dicom-web"}}, "holds credentials"),
        ({"port": 70000}, "port must be 1 to 65535, got 70000"),
    ],
)
def test_a_wrong_config_is_one_error_line_naming_the_file_and_key(tmp_path, capsys, settings, message):
    path = write_config(tmp_path, 11112, 4242, **settings)
    assert main(["serve", "--config", str(path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {path}: ") and message in error and len(error.splitlines()) == 1
    assert "secret" not in error
    assert not (tmp_path / "work").exists()


def test_status_of_a_node_that_is_not_running_exits_3(tmp_path, capsys):
    path = write_config(tmp_path, 11112, 4242)
    assert main(["serve", "--config", str(path), "--status"]) == 3
    assert capsys.readouterr().out.splitlines()[:3] == [
        f"node {NODE_AET} on port 11112: not running",
        "queue: 0 receiving, 0 to segment, 0 to send",
        "done: 0 sent, 0 failed",
    ]


def test_the_journal_is_shared_by_the_receiving_threads(tmp_path, pacs, start_node):
    """Four associations at once, each with its own series: every instance journalled, every series sent once."""
    config = write_config(tmp_path, free_port(), pacs.port)
    node = start_node(config)
    series = [mr_slices(3) for _ in range(4)]
    threads = [threading.Thread(target=push, args=(node.config.port, item)) for item in series]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: journal_states(config)[SENT] == 4, "four SEGs to be sent")
    assert sorted(seg.ReferencedSeriesSequence[0].SeriesInstanceUID for seg in pacs.received) == sorted(
        item[0].SeriesInstanceUID for item in series
    )


def test_a_port_already_in_use_is_one_error_line(tmp_path, pacs, start_node):
    node = start_node(write_config(tmp_path / "first", free_port(), pacs.port))
    with pytest.raises(
        NodeListenError, match=rf"cannot listen on 127\.0\.0\.1:{node.config.port}: Address already in use"
    ):
        start_node(write_config(tmp_path / "second", node.config.port, pacs.port))


def test_a_new_instance_after_the_seg_was_sent_opens_the_series_again_and_it_is_segmented_with_all_its_instances(
    tmp_path, pacs, start_node
):
    config = write_config(tmp_path, free_port(), pacs.port)
    node = start_node(config)
    series = mr_slices(3)
    assert push(node.config.port, series[:2]) == [0, 0]
    wait_for(lambda: len(pacs.received) == 1, "the first SEG")
    assert push(node.config.port, series[2:]) == [0]
    wait_for(lambda: len(pacs.received) == 2, "the second SEG")
    first, second = (len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) for seg in pacs.received)
    assert (first, second) == (2, 3)
    assert pacs.received[0].SOPInstanceUID != pacs.received[1].SOPInstanceUID


def test_a_yaml_config_gives_the_same_settings_as_json(tmp_path):
    (tmp_path / "node.yaml").write_text(
        "ae_title: BRAINSEG\nport: 11112\nwork_dir: work\n"
        "callers:\n  ORTHANC: {host: pacs.example.org, port: 4242}\n  MRI3T: {}\n"
        "send_to: {ae_title: ARCHIVE, host: archive.example.org, port: 104}\n"
        "segment:\n  sop_classes: [MRImageStorage]\n  series_description: '(?i)t1'\n  other_objects: reject\n"
        "model: {device: cpu, folds: [1]}\n"
    )
    config = load_node_config(tmp_path / "node.yaml")
    assert config.work_dir == tmp_path / "work" and config.callers["MRI3T"] is None
    assert str(config.destination("MRI3T")) == "ARCHIVE@archive.example.org:104"
    assert config.sop_classes == (MRImageStorage,) and config.series_description.search("T1 post")
    assert config.model_overrides == {"folds": [1], "device": "$torch.device('cpu')"}


def test_status_prints_a_hostile_series_uid_escaped_on_its_own_line(tmp_path, capsys):
    path = write_config(tmp_path, 11112, 4242)
    journal = Journal(load_node_config(path).work_dir)
    journal.add_instance("1.2.3", "1.2\nqueue: forged", "1.2.9", PACS_AET, "spool/x", "spool/x/1.2.3.dcm")
    journal.instance_event("rejected", "9.9\x1b[2J\ndone: forged", None, PACS_AET, "no pixel data")
    journal.close()
    assert main(["serve", "--config", str(path), "--status"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert not any(line.startswith(("queue: forged", "done: forged")) for line in lines)
    assert "  receiving 1.2\\nqueue: forged from PACS (1 instances)" in lines
    assert any("instance 9.9\\x1b[2J\\ndone: forged from" in line for line in lines)
