"""The PACS round trip against a real Orthanc on 127.0.0.1, and the errors a user meets on the way.

Orthanc (Debian package ``orthanc``) is started once per module by ``tests/orthanc.py``; the tests that need it
skip with the reason when it is not installed. The error tests that need no Orthanc run
against a small pynetdicom server instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from orthanc_server import ORTHANC_AET, TIMEOUT_S, free_port, running_orthanc
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from pipeline.__main__ import main
from pipeline.dicom.pacs import NothingFoundError, PacsError, PacsNode, echo, find_series, get_series, store_files

CLIENT_AET = "PIPELINE_TEST"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[PacsNode]:
    """A fresh Orthanc listening on free ports of 127.0.0.1, which knows this client's AE title."""
    folder = tmp_path_factory.mktemp("orthanc")
    with running_orthanc(folder, modalities={"pipeline": [CLIENT_AET, "127.0.0.1", free_port()]}) as server:
        yield server.node(CLIENT_AET)


def write_mr_series(
    folder: Path, slices: int = 3, study_uid: str | None = None, patient_id: str = "PACS01", spacing: float = 2.0
) -> list[Path]:
    """A small single-frame MR series, one file per slice, stacked along z ``spacing`` mm apart."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), generate_uid(), generate_uid()
    paths = []
    for index in range(slices):
        instance = Dataset()
        instance.file_meta = FileMetaDataset()
        instance.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        instance.SOPClassUID = instance.file_meta.MediaStorageSOPClassUID = MRImageStorage
        instance.SOPInstanceUID = instance.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        instance.PatientName, instance.PatientID, instance.Modality = "Pacs^Test", patient_id, "MR"
        instance.StudyInstanceUID, instance.SeriesInstanceUID = study_uid, series_uid
        instance.FrameOfReferenceUID = frame_uid
        instance.SeriesNumber, instance.InstanceNumber, instance.SeriesDescription = 1, index + 1, "T1"
        instance.ImagePositionPatient, instance.ImageOrientationPatient = [0, 0, spacing * index], [1, 0, 0, 0, 1, 0]
        instance.PixelSpacing, instance.SliceThickness = [1, 1], 2
        instance.Rows = instance.Columns = 16
        instance.SamplesPerPixel, instance.PhotometricInterpretation = 1, "MONOCHROME2"
        instance.BitsAllocated, instance.BitsStored, instance.HighBit, instance.PixelRepresentation = 16, 16, 15, 0
        instance.PixelData = (np.arange(256, dtype=np.uint16) * (index + 1)).tobytes()
        paths.append(folder / f"{index}.dcm")
        instance.save_as(paths[-1], enforce_file_format=True)
    return paths


def uids(paths: list[Path], keyword: str) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True)[keyword].value) for path in paths}


def test_echo_answers(orthanc):
    echo(orthanc)


def test_stored_series_is_found_by_study_series_and_patient(orthanc, tmp_path):
    paths = write_mr_series(tmp_path / "series", slices=3, patient_id="FIND01")
    assert set(store_files(orthanc, paths)) == uids(paths, "SOPInstanceUID")
    (study_uid,), (series_uid,) = uids(paths, "StudyInstanceUID"), uids(paths, "SeriesInstanceUID")
    for query in ({"study_uid": study_uid}, {"series_uid": series_uid}, {"patient_id": "FIND01"}):
        (series,) = find_series(orthanc, **query)
        assert (series.study_uid, series.series_uid, series.modality, series.instances) == (
            study_uid,
            series_uid,
            "MR",
            3,
        ), query


def test_get_retrieves_exactly_the_instances_of_one_series(orthanc, tmp_path):
    wanted = write_mr_series(tmp_path / "a", slices=4)
    other = write_mr_series(tmp_path / "b", slices=2, study_uid=uids(wanted, "StudyInstanceUID").pop())
    store_files(orthanc, wanted + other)
    (series,) = find_series(orthanc, series_uid=uids(wanted, "SeriesInstanceUID").pop())
    progress = []
    retrieved = get_series(orthanc, series, tmp_path / "retrieved", lambda *counts: progress.append(counts))
    assert {path.name for path in (tmp_path / "retrieved").iterdir()} == {
        f"{uid}.dcm" for uid in uids(wanted, "SOPInstanceUID")
    }
    assert sorted(retrieved) == sorted((tmp_path / "retrieved").iterdir())
    by_uid = {pydicom.dcmread(path).SOPInstanceUID: pydicom.dcmread(path).pixel_array for path in wanted}
    for path in retrieved:
        assert np.array_equal(pydicom.dcmread(path).pixel_array, by_uid[path.stem])
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_an_unknown_study_is_a_clear_nothing_found_error(orthanc, tmp_path, capsys):
    with pytest.raises(NothingFoundError, match=r"ORTHANC@127\.0\.0\.1:\d+: no series found for study '1\.2\.3\.4'"):
        find_series(orthanc, study_uid="1.2.3.4")
    argv = _dicom_argv(orthanc, tmp_path / "out", "--study-uid", "1.2.3.4")
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().endswith("no series found for study '1.2.3.4'")
    assert not (tmp_path / "out").exists()


def test_the_dicom_command_segments_a_study_and_stores_the_seg_back(orthanc, tmp_path, capsys):
    from pipeline.phantoms.dicom_series import write_phantom_series

    source = write_phantom_series(tmp_path / "phantom", patients=1, slices=4, size=128, seed=3)
    store_files(orthanc, source)
    (study_uid,), (series_uid,) = uids(source, "StudyInstanceUID"), uids(source, "SeriesInstanceUID")

    argv = [*_dicom_argv(orthanc, tmp_path / "out", "--study-uid", study_uid), "--nifti-copy", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"retrieved {len(source)} instances" in out and "1 of 1 series segmented and stored" in out
    assert len(list((tmp_path / "out" / "segmentations").glob("*.nii.gz"))) == 1

    segs = [series for series in find_series(orthanc, study_uid=study_uid) if series.modality == "SEG"]
    assert len(segs) == 1
    (seg_file,) = get_series(orthanc, segs[0], tmp_path / "seg")
    seg = pydicom.dcmread(seg_file)
    assert seg.StudyInstanceUID == study_uid
    assert seg.FrameOfReferenceUID == uids(source, "FrameOfReferenceUID").pop()
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == series_uid
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == uids(
        source, "SOPInstanceUID"
    )


def test_a_server_series_whose_uids_try_to_escape_is_refused_and_nothing_is_written(orthanc, tmp_path, capsys):
    from pipeline.phantoms.dicom_series import write_phantom_series

    source = write_phantom_series(tmp_path / "phantom", patients=1, slices=2, size=128, seed=6)
    hostile = {"StudyInstanceUID": "../../../../study-escaped", "SeriesInstanceUID": "../../../../series-escaped"}
    for path in source:
        dataset = pydicom.dcmread(path)
        for keyword, value in hostile.items():
            setattr(dataset, keyword, value)
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    store_files(orthanc, source)
    output = tmp_path / "deep" / "er" / "out"
    argv = [*_dicom_argv(orthanc, output, "--study-uid", hostile["StudyInstanceUID"]), "--no-store", "--device", "cpu"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "invalid StudyInstanceUID '../../../../study-escaped'" in error
    assert not [
        path for path in tmp_path.rglob("*") if path.is_file() and not path.is_relative_to(tmp_path / "phantom")
    ]


def test_dicom_into_a_folder_another_run_is_writing_is_refused_naming_it(orthanc, tmp_path, capsys):
    from pipeline.outputs.lock import output_folder_lock
    from pipeline.phantoms.dicom_series import write_phantom_series

    source = write_phantom_series(tmp_path / "phantom", patients=1, slices=2, size=128, seed=5)
    store_files(orthanc, source)
    (study_uid,) = uids(source, "StudyInstanceUID")
    with output_folder_lock(tmp_path / "out"):
        assert main([*_dicom_argv(orthanc, tmp_path / "out", "--study-uid", study_uid), "--device", "cpu"]) == 1
    assert f"another run (process {os.getpid()}) is writing here" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []  # the refused run wrote nothing; the lock went with its holder


def test_a_series_that_cannot_be_segmented_is_named_and_the_others_are_still_stored(orthanc, tmp_path, capsys):
    from pipeline.phantoms.dicom_series import write_phantom_series

    good = write_phantom_series(tmp_path / "phantom", patients=1, slices=4, size=128, seed=4)
    (study_uid,), (patient_id,) = uids(good, "StudyInstanceUID"), uids(good, "PatientID")
    broken = write_mr_series(tmp_path / "broken", slices=3, study_uid=study_uid, patient_id=patient_id, spacing=0)
    store_files(orthanc, good + broken)

    assert main([*_dicom_argv(orthanc, tmp_path / "out", "--patient-id", patient_id), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "1 of 2 series segmented and stored" in captured.out
    (problem,) = captured.err.split("error: 1 of 2 series failed:\n")[1].splitlines()
    assert uids(broken, "SeriesInstanceUID").pop() in problem and "two slices at the same position" in problem
    (seg,) = [series for series in find_series(orthanc, study_uid=study_uid) if series.modality == "SEG"]
    (seg_file,) = get_series(orthanc, seg, tmp_path / "seg")
    assert (
        pydicom.dcmread(seg_file).ReferencedSeriesSequence[0].SeriesInstanceUID == uids(good, "SeriesInstanceUID").pop()
    )


def test_a_wrong_port_names_host_and_port(tmp_path, capsys):
    port = free_port()
    node = PacsNode("127.0.0.1", port, ORTHANC_AET, CLIENT_AET, TIMEOUT_S)
    with pytest.raises(PacsError, match=rf"cannot connect to 127\.0\.0\.1:{port}: Connection refused"):
        echo(node)
    assert main(_dicom_argv(node, tmp_path / "out", "--study-uid", "1.2.3")) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot connect to 127.0.0.1:{port}")


@pytest.fixture
def strict_server() -> Iterator[tuple[int, list[int]]]:
    """A pynetdicom server that accepts only the called AE title 'STRICT' and answers every C-FIND and C-STORE
    with the status in the returned list (one item, set by the test)."""
    ae = AE("STRICT")
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(MRImageStorage)
    status = [0x0000]

    def answer_find(event):
        yield status[0], None

    handlers = [(evt.EVT_C_FIND, answer_find), (evt.EVT_C_STORE, lambda event: status[0])]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        yield server.server_address[1], status
    finally:
        server.shutdown()


def test_a_rejected_association_names_the_server_the_ae_titles_and_the_reason(strict_server):
    port, _ = strict_server
    with pytest.raises(PacsError) as error:
        echo(PacsNode("127.0.0.1", port, "WRONG", CLIENT_AET, TIMEOUT_S))
    assert str(error.value).startswith(
        f"WRONG@127.0.0.1:{port} rejected the association (calling AE title '{CLIENT_AET}', called AE title "
        "'WRONG'): Called AE title not recognised"
    )


def test_a_failed_status_gives_its_code_and_meaning(strict_server):
    port, status = strict_server
    status[0] = 0xA700
    with pytest.raises(PacsError, match=r"C-FIND at SERIES level at STRICT@.* failed: status 0xA700 \(Failure: .+\)"):
        find_series(PacsNode("127.0.0.1", port, "STRICT", CLIENT_AET, TIMEOUT_S), study_uid="1.2.3")


def test_a_refused_store_names_each_file_and_its_status(strict_server, tmp_path):
    port, status = strict_server
    status[0] = 0xA700
    paths = write_mr_series(tmp_path, slices=2)
    with pytest.raises(PacsError) as error:
        store_files(PacsNode("127.0.0.1", port, "STRICT", CLIENT_AET, TIMEOUT_S), paths)
    assert str(error.value).splitlines() == [
        f"C-STORE to STRICT@127.0.0.1:{port} failed for 2 of 2 files (0 stored):",
        *(f"  {path}: status 0xA700 (Failure: Refused: Out of Resources)" for path in paths),
    ]


def test_a_file_of_a_sop_class_the_server_does_not_take_is_named_and_the_others_are_stored(strict_server, tmp_path):
    port, _ = strict_server
    mr, ct = write_mr_series(tmp_path, slices=2)
    header = pydicom.dcmread(ct)
    header.SOPClassUID = header.file_meta.MediaStorageSOPClassUID = CTImageStorage
    header.save_as(ct)
    with pytest.raises(PacsError) as error:
        store_files(PacsNode("127.0.0.1", port, "STRICT", CLIENT_AET, TIMEOUT_S), [mr, ct])
    assert str(error.value).splitlines() == [
        f"C-STORE to STRICT@127.0.0.1:{port} failed for 1 of 2 files (1 stored):",
        f"  {ct}: STRICT@127.0.0.1:{port} accepts no CT Image Storage in Explicit VR Little Endian",
    ]


def _dicom_argv(node: PacsNode, output: Path, *query: str) -> list[str]:
    return [
        "dicom",
        "--host",
        node.host,
        "--port",
        str(node.port),
        "--called-aet",
        node.called_aet,
        "--calling-aet",
        node.calling_aet,
        "--timeout",
        str(node.timeout),
        "--output",
        str(output),
        *query,
    ]
