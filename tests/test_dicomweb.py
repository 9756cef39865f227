"""DICOMweb in and out against a real Orthanc with its DICOMweb plugin and HTTP basic authentication: the
``dicomweb`` round trip (QIDO-RS, WADO-RS, STOW-RS), the node storing its SEG with STOW-RS, credentials that never
leave the environment or their file, and a wrong password in one line."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from orthanc_server import Orthanc, free_port, running_orthanc
from tiny_bundle import THRESHOLD_NETWORK, save_threshold_network

from pipeline.__main__ import main
from pipeline.dicom.dicomweb import AUTH_ENV, DicomwebError, connect, find_series, read_credentials, retrieve_series
from pipeline.phantoms.dicom_series import write_phantom_series

USER, PASSWORD = "radiology", "s3cret-Pa55"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), users={USER: PASSWORD}, dicomweb=True) as server:
        yield server


@pytest.fixture
def tiny_model(tmp_path) -> list[str]:
    """The overrides that run the tiny threshold network, as command-line arguments."""
    save_threshold_network(tmp_path / "model.pt")
    return ["--ckpt_dir", str(tmp_path), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]


def upload_phantom(orthanc: Orthanc, folder: Path, seed: int) -> list[Path]:
    paths = write_phantom_series(folder, patients=1, slices=3, size=128, seed=seed)
    orthanc.upload(paths)
    return paths


def everything_written(folder: Path) -> str:
    return "".join(path.read_bytes().decode("latin-1") for path in folder.rglob("*") if path.is_file())


def test_dicomweb_finds_retrieves_segments_and_stores_the_seg_with_credentials_from_the_environment(
    orthanc, tmp_path, tiny_model, monkeypatch, capsys
):
    source = upload_phantom(orthanc, tmp_path / "phantom", seed=21)
    first = pydicom.dcmread(source[0], stop_before_pixels=True)
    monkeypatch.setenv(AUTH_ENV, f"{USER}:{PASSWORD}")
    url = f"{orthanc.url}/dicom-web"
    argv = ["dicomweb", "--url", url, "--study-uid", first.StudyInstanceUID, "--output", str(tmp_path / "out")]
    assert main([*argv, "--device", "cpu", *tiny_model]) == 0
    captured = capsys.readouterr()
    assert "1 of 1 series segmented and stored" in captured.out
    assert PASSWORD not in captured.out + captured.err + everything_written(tmp_path / "out")

    server = connect(url, read_credentials(), timeout=20)
    (seg,) = [series for series in find_series(server, study_uid=first.StudyInstanceUID) if series.modality == "SEG"]
    (seg_file,) = retrieve_series(server, seg, tmp_path / "back")
    referenced = pydicom.dcmread(seg_file).ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == {
        str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in source
    }


def test_a_wrong_password_is_one_clear_line_without_the_password(orthanc, tmp_path, tiny_model, monkeypatch, capsys):
    auth = tmp_path / "auth"
    auth.write_text(f"{USER}:not-the-{PASSWORD}\n")
    auth.chmod(0o600)
    monkeypatch.delenv(AUTH_ENV, raising=False)
    url = f"{orthanc.url}/dicom-web"
    argv = ["dicomweb", "--url", url, "--auth-file", str(auth), "--study-uid", "1.2.3", "--output", str(tmp_path / "o")]
    assert main([*argv, "--device", "cpu", *tiny_model]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: {url}: QIDO-RS search for series refused (HTTP 401 Unauthorized): the server refused the basic "
        f"credentials from {auth}"
    ]
    assert not (tmp_path / "o").exists()


def test_without_credentials_the_line_says_where_to_put_them(orthanc, monkeypatch):
    monkeypatch.delenv(AUTH_ENV, raising=False)
    with pytest.raises(DicomwebError, match=rf"needs credentials: put them in \${AUTH_ENV} or an auth file"):
        find_series(connect(f"{orthanc.url}/dicom-web", read_credentials(), timeout=20), study_uid="1.2.3")


def test_credentials_come_from_a_private_file_or_the_environment_and_no_message_shows_them(tmp_path, monkeypatch):
    monkeypatch.setenv(AUTH_ENV, "Bearer abc.def")
    token = read_credentials()
    assert (token.kind, token.source, token.secret) == ("bearer", f"${AUTH_ENV}", "abc.def")
    assert "abc.def" not in repr(token)
    shared = tmp_path / "shared"
    shared.write_text("user:hunter2")
    shared.chmod(0o644)
    with pytest.raises(DicomwebError, match="other users may read these credentials; chmod 600 it"):
        read_credentials(shared)
    shared.chmod(0o600)
    assert (read_credentials(shared).user, read_credentials(shared).secret) == ("user", "hunter2")
    shared.write_text("hunter2")
    with pytest.raises(DicomwebError) as error:
        read_credentials(shared)
    assert "hunter2" not in str(error.value) and "USER:PASSWORD or 'Bearer TOKEN'" in str(error.value)
    with pytest.raises(DicomwebError, match="holds credentials; put them in"):
        connect("http://user:hunter2@pacs/dicom-web", None, timeout=1)


def test_the_node_stores_its_seg_on_a_dicomweb_server(orthanc, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage

    from pipeline import default_bundle_dir
    from pipeline.inference.predictor import BundlePredictor
    from pipeline.node.config import load_node_config
    from pipeline.node.journal import SENT, read_journal
    from pipeline.node.service import DicomNode

    save_threshold_network(tmp_path / "model.pt")
    auth = tmp_path / "auth"
    auth.write_text(f"{USER}:{PASSWORD}")
    os.chmod(auth, 0o600)
    config = {
        "ae_title": "BRAINSEG",
        "port": free_port(),
        "host": "127.0.0.1",
        "work_dir": "work",
        "callers": {"MODALITY": None},
        "send_to": {"url": f"{orthanc.url}/dicom-web", "auth_file": "auth"},
    }
    (tmp_path / "node.json").write_text(json.dumps(config))
    overrides = {"ckpt_dir": str(tmp_path), "network_def": THRESHOLD_NETWORK, "image_size": 32, "device": "cpu"}
    segmenter = BundlePredictor(default_bundle_dir(), {**overrides, "device": "$torch.device('cpu')"}).build()
    node = DicomNode(load_node_config(tmp_path / "node.json"), segmenter.slice_segmenter)
    node.start()
    try:
        source = write_phantom_series(tmp_path / "phantom", patients=1, slices=3, size=128, seed=22)
        ae = AE("MODALITY")
        ae.add_requested_context(MRImageStorage)
        assoc = ae.associate("127.0.0.1", config["port"], ae_title="BRAINSEG")
        assert [assoc.send_c_store(path).Status for path in source] == [0, 0, 0]
        assoc.release()
        deadline = time.monotonic() + 60
        while read_journal(node.config.work_dir)[0][SENT] != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        node.stop()
    assert read_journal(node.config.work_dir)[0][SENT] == 1
    study = str(pydicom.dcmread(source[0], stop_before_pixels=True).StudyInstanceUID)
    server = connect(f"{orthanc.url}/dicom-web", read_credentials(auth), timeout=20)
    assert [series.modality for series in find_series(server, study_uid=study)].count("SEG") == 1
    assert PASSWORD not in everything_written(tmp_path / "work")
