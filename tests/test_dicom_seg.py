"""DICOM series in, DICOM SEG out: the SEG's content, references, UIDs and coding; ``infer`` on DICOM folders."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import highdicom
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import SegmentationStorage, generate_uid

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.dicom.seg_writer import write_dicom_seg
from pipeline.dicom.series import DicomSeries, read_dicom_folder
from pipeline.inference.predictor import BundlePredictor
from pipeline.inference.scans import segment_dicom_folder
from pipeline.inference.slice_segmenter import SliceSegmenter
from pipeline.phantoms.dicom_series import write_phantom_series

SLICES, SIZE = 4, 128


@pytest.fixture(scope="module")
def release_segmenter() -> SliceSegmenter:
    return BundlePredictor(default_bundle_dir(), {"device": "$torch.device('cpu')"}).build().slice_segmenter


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory) -> Path:
    """Two phantom patients, one MR series each, as written by ``synth --format dicom``."""
    folder = tmp_path_factory.mktemp("dicom") / "in"
    write_phantom_series(folder, patients=2, slices=SLICES, size=SIZE, seed=0)
    return folder


def _series(folder: Path) -> list[DicomSeries]:
    series, failures = read_dicom_folder(folder)
    assert not failures
    return series


def _test_mask(shape: tuple[int, ...]) -> np.ndarray:
    """A different rectangle on every slice but the second, which stays empty."""
    mask = np.zeros(shape, dtype=np.uint8)
    for index in range(shape[0]):
        if index != 1:
            mask[index, 10 + 7 * index : 30 + 7 * index, 20 : 60 - 5 * index] = 1
    return mask


def _metadata() -> dict:
    return json.loads((default_bundle_dir() / "configs" / "metadata.json").read_text())


def test_the_seg_holds_the_mask_references_every_instance_and_shares_the_study_and_frame(phantom_folder, tmp_path):
    series = _series(phantom_folder)[0]
    mask = _test_mask(series.pixels.shape)
    metadata = _metadata()
    path = write_dicom_seg(series, mask, tmp_path / "seg.dcm", metadata["name"], metadata["version"])

    seg = highdicom.seg.segread(path)
    sources = [dataset.SOPInstanceUID for dataset in series.datasets]
    assert seg.SOPClassUID == SegmentationStorage and seg.SegmentationType == "BINARY"
    assert (seg.StudyInstanceUID, seg.FrameOfReferenceUID) == (series.study_uid, series.frame_of_reference_uid)
    assert seg.PatientID == series.datasets[0].PatientID and seg.SeriesInstanceUID != series.series_uid
    referenced = [item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert sorted(referenced) == sorted(sources)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert seg.NumberOfFrames == SLICES  # the empty slice has its frame too
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=sources, segment_numbers=[1])
    np.testing.assert_array_equal(pixels[..., 0], mask)


def test_the_segment_is_a_tumour_coded_as_snomed_neoplasm_by_the_bundle_and_its_version(phantom_folder, tmp_path):
    series = _series(phantom_folder)[0]
    metadata = _metadata()
    path = write_dicom_seg(series, _test_mask(series.pixels.shape), tmp_path / "seg.dcm", metadata["name"], "9.9.9")

    (segment,) = highdicom.seg.segread(path).SegmentSequence
    assert (segment.SegmentNumber, segment.SegmentLabel, segment.SegmentAlgorithmType) == (1, "tumour", "AUTOMATIC")
    coded = segment.SegmentedPropertyTypeCodeSequence[0]
    assert (coded.CodeValue, coded.CodingSchemeDesignator, coded.CodeMeaning) == ("108369006", "SCT", "Neoplasm")
    category = segment.SegmentedPropertyCategoryCodeSequence[0]
    assert (category.CodeValue, category.CodingSchemeDesignator) == ("49755003", "SCT")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (metadata["name"], "9.9.9")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"


def test_a_multi_frame_source_gets_each_frames_mask_whatever_its_frame_order(phantom_folder, tmp_path):
    datasets = [pydicom.dcmread(path) for path in sorted((phantom_folder).rglob("*.dcm"))][:SLICES]
    random.Random(0).shuffle(datasets)
    enhanced = highdicom.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=datasets,
        series_instance_uid=generate_uid(),
        series_number=7,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "frames.dcm", enforce_file_format=True)
    (series,) = _series(tmp_path / "enhanced")
    mask = _test_mask(series.pixels.shape)
    path = write_dicom_seg(series, mask, tmp_path / "seg.dcm", "test", "1")

    seg = highdicom.seg.segread(path)
    frames = enhanced.PerFrameFunctionalGroupsSequence
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=enhanced.SOPInstanceUID,
        source_frame_numbers=list(range(1, len(frames) + 1)),
        segment_numbers=[1],
    )
    slice_positions = [float(series.affine[2, 3] + series.affine[2, 2] * index) for index in range(SLICES)]
    for frame, frame_pixels in zip(frames, pixels):
        z = float(frame.PlanePositionSequence[0].ImagePositionPatient[2])
        np.testing.assert_array_equal(
            frame_pixels[..., 0], mask[int(np.argmin(np.abs(np.subtract(slice_positions, z))))]
        )


def test_segment_dicom_folder_writes_a_seg_per_series_with_the_models_mask_and_a_nifti_copy(
    phantom_folder, release_segmenter, tmp_path
):
    written, failures = segment_dicom_folder(phantom_folder, tmp_path / "out", release_segmenter, nifti_copy=True)

    assert failures == []
    series_list = _series(phantom_folder)
    assert len(written) == 2 * len(series_list)
    for series in series_list:
        folder = tmp_path / "out" / series.files[0].parent.relative_to(phantom_folder)
        seg_path, nifti_path = folder / f"{series.series_uid}_seg.dcm", folder / f"{series.series_uid}_seg.nii.gz"
        assert {seg_path, nifti_path} <= set(written)
        expected = release_segmenter.segment(series.pixels.transpose(2, 1, 0), series.affine, 2).transpose(2, 1, 0)
        assert expected.sum() > 50  # the release model finds the phantom tumour
        seg = highdicom.seg.segread(seg_path)
        sources = [dataset.SOPInstanceUID for dataset in series.datasets]
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=sources, segment_numbers=[1])
        np.testing.assert_array_equal(pixels[..., 0], expected)
        algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (_metadata()["name"], _metadata()["version"])
        copy = nib.load(nifti_path)
        np.testing.assert_allclose(copy.affine, series.affine, atol=1e-4)  # NIfTI-1 keeps float32
        np.testing.assert_array_equal(np.asanyarray(copy.dataobj), expected.transpose(2, 1, 0))


def _broken_instance(source: Path, path: Path) -> Path:
    """An instance of a series of its own without pixel data."""
    dataset = pydicom.dcmread(source)
    del dataset.PixelData
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.save_as(path, enforce_file_format=True)
    return path


def _without_frame_of_reference(source: Path, folder: Path) -> None:
    """The instances of ``source`` as another series lacking FrameOfReferenceUID, which a SEG cannot do without."""
    folder.mkdir()
    series_uid = generate_uid()
    for path in source.rglob("*.dcm"):
        dataset = pydicom.dcmread(path)
        del dataset.FrameOfReferenceUID
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.save_as(folder / path.name, enforce_file_format=True)


def test_infer_on_a_mixed_folder_writes_the_good_seg_names_each_bad_input_and_exits_1(phantom_folder, tmp_path, capsys):
    folder = tmp_path / "in"
    patient = next(path for path in phantom_folder.iterdir() if path.is_dir())
    shutil.copytree(patient, folder / "good")
    for path in (folder / "good").rglob("*.dcm"):
        path.rename(path.with_suffix(""))  # scanners and PACS exports often name instances without a suffix
    (folder / "notes.dcm").write_text("not DICOM at all")
    broken = _broken_instance(next(patient.rglob("*.dcm")), folder / "broken")
    _without_frame_of_reference(patient, folder / "unplaced")
    out = tmp_path / "out"
    assert main(["infer", "--input", str(folder), "--recursive", "--output", str(out), "--device", "cpu"]) == 1

    (series,) = _series(folder / "good")
    seg_path = out / "good" / "5" / f"{series.series_uid}_seg.dcm"
    assert highdicom.seg.segread(seg_path).NumberOfFrames == SLICES
    error = capsys.readouterr().err
    assert "3 inputs were not segmented" in error
    assert f"{folder / 'notes.dcm'}: not a DICOM file" in error and f"{broken}: missing pixel data" in error
    (unplaced,) = _series(folder / "unplaced")
    assert f"{unplaced.label}: could not be segmented: " in error and "no FrameOfReferenceUID" in error
    assert not (out / "unplaced").exists()
    record = json.loads((out / "inference_record.json").read_text())
    assert record["counts"] == {"written": 1, "failed": 3}
    (written,) = [entry for entry in record["inputs"] if entry["status"] == "written"]
    overlay = seg_path.with_name(f"{series.series_uid}_overlay.png")
    assert written["input"] == series.label and written["outputs"] == [str(seg_path), str(overlay)]
    assert overlay.is_file()


def test_infer_on_one_dicom_file_writes_a_seg_of_one_frame_and_a_nifti_copy_on_request(phantom_folder, tmp_path):
    source = next(phantom_folder.rglob("*.dcm"))
    out = tmp_path / "out"
    assert main(["infer", "--input", str(source), "--output", str(out), "--nifti-copy", "--device", "cpu"]) == 0
    (series,) = _series(source)
    seg = highdicom.seg.segread(out / f"{series.series_uid}_seg.dcm")
    assert seg.NumberOfFrames == 1
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        series.datasets[0].SOPInstanceUID
    )
    assert nib.load(out / f"{series.series_uid}_seg.nii.gz").shape == (SIZE, SIZE, 1)


def test_infer_on_a_folder_of_unusable_dicom_is_one_error_naming_each_file_and_writes_nothing(
    phantom_folder, tmp_path, capsys, recwarn, caplog
):
    folder = tmp_path / "in"
    folder.mkdir()
    broken = _broken_instance(next(phantom_folder.rglob("*.dcm")), folder / "1.dcm")
    (folder / "2.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 16)
    assert main(["infer", "--input", str(folder), "--output", str(tmp_path / "out"), "--device", "cpu"]) == 1
    error = capsys.readouterr().err.splitlines()
    assert error[0].startswith(f"error: {folder}: nothing to segment")
    assert error[1].startswith(f"  {broken}: missing pixel data") and error[2].startswith(f"  {folder / '2.dcm'}: ")
    assert not (tmp_path / "out").exists()
    # pydicom's parser says nothing of its own before the error line: no warning, no log line
    assert not [warning for warning in recwarn if "pydicom" in warning.filename]
    assert not [record for record in caplog.records if record.name.startswith("pydicom")]


def test_infer_on_a_dicom_export_tree_asks_for_recursive_and_then_segments_every_series(
    phantom_folder, tmp_path, capsys
):
    out = tmp_path / "out"
    assert main(["infer", "--input", str(phantom_folder), "--output", str(out), "--device", "cpu"]) == 1
    error = capsys.readouterr().err.strip()
    assert (
        error == f"error: {phantom_folder}: nothing to segment in this folder, only in its subfolders: add --recursive"
    )
    assert main(["infer", "--input", str(phantom_folder), "--output", str(out), "--device", "cpu", "--recursive"]) == 0
    assert len(list(out.rglob("*_seg.dcm"))) == len(_series(phantom_folder)) == 2


def test_infer_draws_a_sheet_of_each_series_with_its_masks_outline_unless_told_not_to(phantom_folder, tmp_path):
    source = next(phantom_folder.iterdir())
    (series,) = _series(source)
    drawn, plain = tmp_path / "drawn", tmp_path / "plain"
    assert main(["infer", "--input", str(source), "--recursive", "--output", str(drawn), "--device", "cpu"]) == 0
    argv = ["infer", "--input", str(source), "--recursive", "--output", str(plain), "--no-overlays", "--device", "cpu"]
    assert main(argv) == 0
    (sheet,) = drawn.rglob(f"{series.series_uid}_overlay.png")
    with Image.open(sheet) as image:
        assert image.mode in ("RGB", "RGBA") and min(image.size) > 200
        pixels = np.asarray(image.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 0  # the release model outlines the phantom's tumour
    assert not list(plain.rglob("*_overlay.png")) and list(plain.rglob(f"{series.series_uid}_seg.dcm"))


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy not on PATH: install the Debian package dicom3tools"
)
def test_the_seg_passes_dicom3tools_validator_without_an_error_or_a_warning(phantom_folder, tmp_path):
    """David Clunie's ``dciodvfy`` checks the SEG against the standard's IOD: modules, attributes, value rules."""
    series = _series(phantom_folder)[0]
    metadata = _metadata()
    path = write_dicom_seg(series, _test_mask(series.pixels.shape), tmp_path / "seg.dcm", metadata["name"], "0.5.0")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    report = (result.stdout + result.stderr).splitlines()
    assert report[0] == "Segmentation"  # the IOD it recognised and checked
    assert [line for line in report if line.startswith(("Error", "Warning"))] == []
