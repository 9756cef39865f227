"""DICOM series reading: grouping, slice order, rescale, RAS affine, enhanced multi-frame and every bad input."""

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    EncapsulatedPDFStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    MRImageStorage,
    generate_uid,
)

from pipeline.dicom.series import is_dicom_file, read_dicom_folder
from pipeline.user_errors import UserError

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Sagittal: rows run anterior to posterior (LPS +y), columns superior to inferior (LPS -z); normal LPS -x.
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
ROWS, COLUMNS = 6, 5


def file_meta(sop_class, sop_instance, transfer_syntax=ExplicitVRLittleEndian):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    return meta


def base_dataset(sop_class, series_uid, study_uid="1.2.3.4", transfer_syntax=ExplicitVRLittleEndian):
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = file_meta(sop_class, ds.SOPInstanceUID, transfer_syntax)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "P1"
    ds.Modality = "MR"
    ds.SeriesNumber = 3
    ds.SeriesDescription = "T1 post"
    return ds


def mr_slice(
    series_uid,
    position,
    orientation=AXIAL,
    spacing=(0.8, 0.6),
    stored=None,
    slope=1.0,
    intercept=0.0,
    instance=1,
    shape=(ROWS, COLUMNS),
    study_uid="1.2.3.4",
):
    """A single-frame MR Image Storage dataset with int16 stored values."""
    ds = base_dataset(MRImageStorage, series_uid, study_uid)
    ds.FrameOfReferenceUID = "1.2.3.9"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 3.0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if stored is None:
        stored = np.full(shape, instance, dtype=np.int16)
    ds.PixelData = np.asarray(stored, dtype="<i2").tobytes()
    return ds


def save(ds, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def axial_stack(folder, series_uid, count=3, prefix="good", **kwargs):
    """``count`` evenly spaced axial slices 3 mm apart, slice k filled with k + 1."""
    return [
        save(mr_slice(series_uid, (-10.0, -20.0, 5.0 + 3.0 * k), instance=k + 1, **kwargs), folder / f"{prefix}{k}.dcm")
        for k in range(count)
    ]


def test_slices_follow_position_not_file_name_or_instance_number(tmp_path):
    # Slice k lies k * 2.5 mm along the normal of a tilted plane; names and InstanceNumbers are both scrambled.
    tilt = np.deg2rad(20.0)
    orientation = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), np.sin(tilt))
    normal = np.cross(orientation[:3], orientation[3:])
    names = ["c.dcm", "a.dcm", "e.dcm", "b.dcm", "d.dcm"]
    instances = [3, 5, 1, 4, 2]
    for k in (2, 0, 4, 1, 3):
        position = np.array([5.0, -7.0, 11.0]) + 2.5 * k * normal
        stored = np.full((ROWS, COLUMNS), 100 + k, dtype=np.int16)
        save(
            mr_slice("1.2.5", position, orientation, stored=stored, instance=instances[k]),
            tmp_path / names[k],
        )
    (series,), failures = read_dicom_folder(tmp_path)
    assert failures == []
    assert series.pixels[:, 0, 0].tolist() == [100, 101, 102, 103, 104]
    assert [path.name for path in series.files] == names
    assert [int(ds.InstanceNumber) for ds in series.datasets] == instances
    assert np.allclose(series.affine[:3, 2], np.array([-1.0, -1.0, 1.0]) * 2.5 * normal)


def test_rescale_slope_and_intercept_are_applied_per_slice(tmp_path):
    stored = np.arange(ROWS * COLUMNS, dtype=np.int16).reshape(ROWS, COLUMNS) - 7
    save(mr_slice("1.2.6", (0, 0, 0), stored=stored, slope=2.5, intercept=-100.0), tmp_path / "1.dcm")
    save(mr_slice("1.2.6", (0, 0, 3), stored=stored, slope=0.5, intercept=10.0, instance=2), tmp_path / "2.dcm")
    (series,), failures = read_dicom_folder(tmp_path)
    assert failures == []
    assert series.pixels.dtype == np.float32 and series.pixels.shape == (2, ROWS, COLUMNS)
    np.testing.assert_array_equal(series.pixels[0], stored * 2.5 - 100.0)
    np.testing.assert_array_equal(series.pixels[1], stored * 0.5 + 10.0)


def test_affine_is_the_hand_computed_ras_affine(tmp_path):
    # Sagittal slices at LPS x = 10, 7, 4: the normal (-1, 0, 0) orders them by falling x.
    for k, x in enumerate((4.0, 10.0, 7.0)):
        save(mr_slice("1.2.7", (x, -20.0, 30.0), SAGITTAL, spacing=(0.8, 0.6), instance=k + 1), tmp_path / f"{k}.dcm")
    (series,), failures = read_dicom_folder(tmp_path)
    assert failures == []
    # Columns: along a row 0.6 mm to LPS +y (RAS -y); down a column 0.8 mm to LPS -z; slices 3 mm to LPS -x
    # (RAS +x); origin LPS (10, -20, 30) is RAS (-10, 20, 30).
    expected = np.array(
        [
            [0.0, 0.0, 3.0, -10.0],
            [-0.6, 0.0, 0.0, 20.0],
            [0.0, -0.8, 0.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(series.affine, expected, atol=1e-9)
    assert [float(ds.ImagePositionPatient[0]) for ds in series.datasets] == [10.0, 7.0, 4.0]
    image = nib.Nifti1Image(series.pixels.transpose(2, 1, 0), series.affine)
    assert nib.aff2axcodes(image.affine) == ("P", "I", "R")
    assert image.shape == (COLUMNS, ROWS, 3)


def test_two_series_and_two_studies_in_one_folder_are_grouped(tmp_path):
    axial_stack(tmp_path, "1.2.8.1", count=3, prefix="a")
    axial_stack(tmp_path / "sub", "1.2.8.2", count=4, prefix="b", study_uid="1.2.3.5")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "old.dcm").write_bytes((tmp_path / "a0.dcm").read_bytes())
    (tmp_path / ".a0.dcm~partial.dcm").write_bytes(b"half written")
    series, failures = read_dicom_folder(tmp_path)
    assert failures == []
    assert sorted((item.series_uid, item.study_uid, item.pixels.shape[0]) for item in series) == [
        ("1.2.8.1", "1.2.3.4", 3),
        ("1.2.8.2", "1.2.3.5", 4),
    ]
    labels = {item.series_uid: item.label for item in series}
    assert labels["1.2.8.2"] == f"{tmp_path / 'sub'} series 3 'T1 post' (1.2.8.2)"
    only_top, _ = read_dicom_folder(tmp_path, recursive=False)
    assert [item.series_uid for item in only_top] == ["1.2.8.1"]


def enhanced_mr(positions, values, spacing=(0.5, 0.7), slope=2.0, intercept=-3.0):
    """An Enhanced MR Image Storage instance: one frame per position, geometry in functional groups."""
    ds = base_dataset(EnhancedMRImageStorage, "1.2.9")
    ds.FrameOfReferenceUID = "1.2.3.9"
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(positions)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing = list(spacing)
    measures.SliceThickness = 2.0
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "US"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for position in positions:
        group, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = list(position)
        group.PlanePositionSequence = Sequence([plane])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack([np.full((ROWS, COLUMNS), v, dtype="<u2") for v in values]).tobytes()
    return ds


def test_enhanced_multiframe_frames_are_ordered_by_their_plane_positions(tmp_path):
    # Frames stored out of order: z = 4, 0, 2 mm, holding 40, 0, 20.
    save(enhanced_mr([(1.0, 2.0, 4.0), (1.0, 2.0, 0.0), (1.0, 2.0, 2.0)], [40, 0, 20]), tmp_path / "multi.dcm")
    (series,), failures = read_dicom_folder(tmp_path)
    assert failures == []
    assert series.pixels[:, 0, 0].tolist() == [-3.0, 37.0, 77.0]  # 2 * stored - 3, in z order
    assert len(series.files) == len(series.datasets) == 1 and int(series.datasets[0].NumberOfFrames) == 3
    expected = np.array([[-0.7, 0, 0, -1.0], [0, -0.5, 0, -2.0], [0, 0, 2.0, 0.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(series.affine, expected, atol=1e-9)


def test_enhanced_multiframe_with_repeated_positions_is_refused(tmp_path):
    save(enhanced_mr([(0, 0, 0), (0, 0, 2), (0, 0, 0)], [1, 2, 3]), tmp_path / "multi.dcm")
    series, (failure,) = read_dicom_folder(tmp_path)
    assert series == []
    assert failure.startswith(f"{tmp_path} series 3 'T1 post' (1.2.9): ") and "same position" in failure
    assert "multi.dcm frame 1" in failure and "multi.dcm frame 3" in failure


def non_image(sop_class):
    ds = base_dataset(sop_class, "1.2.99")
    if sop_class == EncapsulatedPDFStorage:
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    else:
        ds.ValueType = "CONTAINER"
    return ds


def jpeg2000(transfer_syntax):
    ds = mr_slice("1.2.98", (0, 0, 0))
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 dummy frame"])
    ds["PixelData"].VR = "OB"
    return ds


def without_pixels():
    ds = mr_slice("1.2.97", (0, 0, 0))
    del ds.PixelData
    return ds


def colour():
    ds = mr_slice("1.2.96", (0, 0, 0))
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(ROWS * COLUMNS * 3)
    return ds


def odd_slice_series(**change):
    """Three slices of series 1.2.95, the last differing by ``change`` (or at a duplicate/uneven position)."""
    position = change.pop("position", (-10.0, -20.0, 11.0))
    return [
        mr_slice("1.2.95", (-10.0, -20.0, 5.0)),
        mr_slice("1.2.95", (-10.0, -20.0, 8.0), instance=2),
        mr_slice("1.2.95", position, instance=3, **change),
    ]


# name: (datasets to write, or raw bytes, and the words the one failure line must hold)
BAD_INPUTS = {
    "structured report": ([non_image(BasicTextSRStorage)], ["not an image", "Basic Text SR Storage"]),
    "encapsulated pdf": ([non_image(EncapsulatedPDFStorage)], ["not an image", "Encapsulated PDF Storage"]),
    "missing pixel data": ([without_pixels()], ["missing pixel data", "MR Image Storage"]),
    "colour image": ([colour()], ["colour image", "SamplesPerPixel 3"]),
    "orientation differs": (odd_slice_series(orientation=(1, 0, 0, 0, 0, -1)), ["orientations"]),
    "spacing differs": (odd_slice_series(spacing=(0.9, 0.9)), ["pixel spacings", "0.9x0.9 mm"]),
    "size differs": (odd_slice_series(shape=(7, 5), stored=np.zeros((7, 5))), ["sizes", "6x5", "7x5"]),
    "duplicate position": (odd_slice_series(position=(-10.0, -20.0, 8.0)), ["same position", "8.00 mm"]),
    "missing slice": (odd_slice_series(position=(-10.0, -20.0, 14.0)), ["uneven slice positions", "3 to 6 mm"]),
    "not DICOM": (b"hello, I am a text file\n" * 20, ["not a DICOM file"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_and_the_good_series_still_comes_back(tmp_path, case):
    content, words = BAD_INPUTS[case]
    good = axial_stack(tmp_path / "good", "1.2.1")
    if isinstance(content, bytes):
        bad = tmp_path / "bad" / "x.dcm"
        bad.parent.mkdir()
        bad.write_bytes(content)
    else:
        bad = tmp_path / "bad"
        for k, ds in enumerate(content):
            save(ds, bad / f"{k}.dcm")
    series, failures = read_dicom_folder(tmp_path)
    assert [item.series_uid for item in series] == ["1.2.1"]
    assert series[0].files == tuple(good) and series[0].pixels[:, 0, 0].tolist() == [1, 2, 3]
    assert len(failures) == 1, failures
    assert failures[0].startswith(str(bad))
    for word in words:
        assert word in failures[0]


def test_series_geometry_failure_names_the_series(tmp_path):
    for k, ds in enumerate(odd_slice_series(spacing=(0.9, 0.9))):
        save(ds, tmp_path / f"{k}.dcm")
    _, (failure,) = read_dicom_folder(tmp_path)
    assert failure.startswith(f"{tmp_path} series 3 'T1 post' (1.2.95): inconsistent geometry")
    assert "0.8x0.6 mm in 0.dcm, 1.dcm; 0.9x0.9 mm in 2.dcm" in failure


def test_compressed_syntax_without_a_decoder_names_the_package(tmp_path):
    if get_decoder(HTJ2KLossless).is_available:
        pytest.skip("an HTJ2K decoder (pylibjpeg-openjpeg) is installed here")
    axial_stack(tmp_path, "1.2.1")
    save(jpeg2000(HTJ2KLossless), tmp_path / "htj2k.dcm")
    series, (failure,) = read_dicom_folder(tmp_path)
    assert len(series) == 1
    assert failure.startswith(f"{tmp_path / 'htj2k.dcm'}: ")
    assert "High-Throughput JPEG 2000" in failure and "install pylibjpeg with pylibjpeg-openjpeg" in failure


def test_jpeg2000_file_is_refused_or_its_decoding_failure_reported(tmp_path):
    axial_stack(tmp_path, "1.2.1")
    save(jpeg2000(JPEG2000Lossless), tmp_path / "j2k.dcm")
    series, (failure,) = read_dicom_folder(tmp_path)
    assert len(series) == 1
    assert failure.startswith(f"{tmp_path / 'j2k.dcm'}: ") and "JPEG 2000" in failure
    if get_decoder(JPEG2000Lossless).is_available:
        assert "could not decode the pixel data" in failure
    else:
        assert "pylibjpeg-openjpeg" in failure and "python-gdcm" in failure


def test_copy_of_an_instance_is_read_once(tmp_path):
    first, *_ = axial_stack(tmp_path, "1.2.1")
    copy = tmp_path / "zz_copy.dcm"
    copy.write_bytes(first.read_bytes())
    (series,), (failure,) = read_dicom_folder(tmp_path)
    assert series.pixels.shape[0] == 3
    assert failure == f"{copy}: same SOPInstanceUID as {first} (a copy); read once"


def test_folder_without_dicom_and_missing_path(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    assert read_dicom_folder(tmp_path) == (
        [],
        [f"{tmp_path}: no DICOM files in this folder or below (none with 'DICM' at byte 128 or a .dcm suffix)"],
    )
    with pytest.raises(UserError, match="no such file or folder"):
        read_dicom_folder(tmp_path / "absent")


def test_single_file_and_is_dicom_file(tmp_path):
    path = save(mr_slice("1.2.4", (0, 0, 0)), tmp_path / "IM0001.dcm")
    marker_only = tmp_path / "IM0002"
    marker_only.write_bytes(path.read_bytes())
    (series,), failures = read_dicom_folder(marker_only)
    assert failures == [] and series.files == (marker_only,)
    assert series.affine[2, 2] == 3.0, "a one-slice series steps by its SliceThickness"
    assert is_dicom_file(path) and is_dicom_file(marker_only)
    (tmp_path / "x.png").write_bytes(b"\x89PNG" + bytes(200))
    assert not is_dicom_file(tmp_path / "x.png")
