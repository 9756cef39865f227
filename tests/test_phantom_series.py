"""Phantom DICOM series: ``synth --format dicom``, its headers, reproducibility and the reader's round trip."""

import os

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from pipeline.__main__ import main
from pipeline.data.errors import DatasetError
from pipeline.data.figshare import read_figshare_slice
from pipeline.dicom.series import read_dicom_folder
from pipeline.phantoms.dicom_series import SLICE_SPACING_MM, write_phantom_series
from pipeline.phantoms.slices import phantom_cohort, synthesize_dataset

PATIENTS, SLICES, SIZE, SEED = 2, 3, 128, 4
HEADERS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "StudyDate",
    "SeriesNumber",
    "SeriesDescription",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom")
    return out, write_phantom_series(out, PATIENTS, SLICES, SIZE, SEED)


def test_synth_writes_dicom_series_with_realistic_headers(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["synth", "--format", "dicom", "--out", str(out), "--patients", "2", "--slices", "3", "--size", "128"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("wrote 6 DICOM MR slices in 2 series, one per patient (")
    assert not list(out.rglob("*.mat"))
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 6
    series_uids = set()
    for path in files:
        ds = pydicom.dcmread(path)  # no force: a proper Part 10 file with preamble and meta
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == MRImageStorage
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Modality == "MR" and ds.SamplesPerPixel == 1 and ds.BitsAllocated == 16
        missing = [keyword for keyword in HEADERS if not str(ds.get(keyword, "")).strip()]
        assert missing == []
        assert float(ds.RescaleSlope) != 1.0 and float(ds.RescaleIntercept) != 0.0
        assert path.relative_to(out).parts == (ds.PatientID, str(ds.SeriesNumber), f"{ds.InstanceNumber}.dcm")
        assert ds.pixel_array.dtype == np.int16
        series_uids.add(ds.SeriesInstanceUID)
    assert len(series_uids) == 2
    assert main(argv) == 1, "a folder that already holds .dcm files is refused"


def test_same_seed_same_uids_and_pixels_other_seed_other_uids(tmp_path, written):
    out, paths = written
    again = write_phantom_series(tmp_path / "again", PATIENTS, SLICES, SIZE, SEED)
    other = write_phantom_series(tmp_path / "other", PATIENTS, SLICES, SIZE, SEED + 1)
    assert [path.relative_to(out) for path in paths] == [path.relative_to(tmp_path / "again") for path in again]
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
    for first, second in zip(paths, again):
        a, b = pydicom.dcmread(first), pydicom.dcmread(second)
        assert [a[key].value for key in keys] == [b[key].value for key in keys]
        assert a.PixelData == b.PixelData
    uids = {pydicom.dcmread(path).SOPInstanceUID for path in paths}
    assert len(uids) == len(paths)
    assert not uids & {pydicom.dcmread(path).SOPInstanceUID for path in other}
    with pytest.raises(DatasetError, match="already holds .dcm files"):
        write_phantom_series(out, PATIENTS, SLICES, SIZE, SEED)


def test_reader_gets_back_the_phantom_slices_and_the_geometry_written(tmp_path, written):
    out, paths = written
    series, failures = read_dicom_folder(out)
    assert failures == [] and len(series) == PATIENTS
    # The same slices as the MAT-file layout for the same seed, intensities restored by the rescale.
    synthesize_dataset(tmp_path / "mat", PATIENTS, SLICES, SIZE, SEED)
    by_patient = {item.datasets[0].PatientID: item for item in series}
    for index, patient in enumerate(phantom_cohort(PATIENTS, SEED)):
        item = by_patient[patient.pid]
        assert item.files == tuple(path for path in paths if path.parts[-3] == patient.pid)
        for k in range(SLICES):
            expected = read_figshare_slice(tmp_path / "mat" / f"{index * SLICES + k + 1}.mat").image
            np.testing.assert_array_equal(item.pixels[k], expected.astype(np.float32))
        first = item.datasets[0]
        spacing = float(first.PixelSpacing[0])
        row, column = np.array(first.ImageOrientationPatient[:3]), np.array(first.ImageOrientationPatient[3:])
        flip = np.array([-1.0, -1.0, 1.0])
        np.testing.assert_allclose(item.affine[:3, 0], flip * row * spacing, atol=1e-6)
        np.testing.assert_allclose(item.affine[:3, 1], flip * column * spacing, atol=1e-6)
        np.testing.assert_allclose(item.affine[:3, 2], flip * np.cross(row, column) * SLICE_SPACING_MM, atol=1e-5)
        for k, ds in enumerate(item.datasets):
            voxel = item.affine @ np.array([0.0, 0.0, k, 1.0])
            np.testing.assert_allclose(voxel[:3], flip * np.array(ds.ImagePositionPatient, dtype=float), atol=1e-5)
        assert abs(np.linalg.norm(item.affine[:3, 0]) - 250.0 / SIZE) < 1e-6
        assert item.frame_of_reference_uid == first.FrameOfReferenceUID and item.study_uid == first.StudyInstanceUID


def test_legacy_converted_enhanced_mr_reads_as_the_single_frame_series(tmp_path, written):
    out, _ = written
    single = read_dicom_folder(out)[0][0]
    shuffled = [single.datasets[k] for k in (2, 0, 1)]
    multi_frame = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=shuffled,
        series_instance_uid=hd.UID(),
        series_number=6,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    path = tmp_path / "enhanced.dcm"
    multi_frame.save_as(path, enforce_file_format=True)
    (series,), failures = read_dicom_folder(path)
    assert failures == [] and series.files == (path,) and len(series.datasets) == 1
    np.testing.assert_array_equal(series.pixels, single.pixels)
    np.testing.assert_allclose(series.affine, single.affine, atol=1e-6)


@pytest.mark.parametrize("planted", ["patient", "series"])
def test_synth_dicom_refuses_a_link_planted_on_a_patient_or_series_folder(tmp_path, capsys, planted):
    pid = phantom_cohort(2, 0)[1].pid  # PatientIDs follow from the seed: the folder name can be predicted
    out, outside = tmp_path / "out", tmp_path / "outside"
    (outside / "5").mkdir(parents=True)
    (outside / "5" / "1.dcm").write_bytes(b"a user's file")
    (outside / "1.dcm").write_bytes(b"a user's file")
    link = out / pid if planted == "patient" else out / pid / "5"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside if planted == "patient" else outside / "5", target_is_directory=True)

    argv = ["synth", "--format", "dicom", "--out", str(out), "--patients", "2", "--slices", "2", "--size", "128"]
    assert main([*argv, "--seed", "0"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {link}: refused: this output folder is a link (to {os.readlink(link)}); the command writes its own "
        "files there and does not follow links: remove it, or choose another output folder"
    ]
    assert sorted(path.read_bytes() for path in outside.rglob("*.dcm")) == [b"a user's file"] * 2
    assert not [name for _, _, names in os.walk(out) for name in names]  # refused before the first patient
