"""Phantom MR series as DICOM: the phantom patients' slices stacked into one axial series each, with real headers.

Each patient's slices are the ones ``synthesize_dataset`` writes for the same seed (same pixels, same tumour
across neighbouring slices), placed 7 mm apart (6 mm slices, 1 mm gap, 0.49 mm pixels at 512x512: the figshare
protocol) in a stack tilted a few degrees about the left-right axis, as head scans are. Values are stored as
int16 with RescaleSlope 0.5 and RescaleIntercept -512, so a reader that ignores them gets wrong intensities.
The same arguments give the same files, UIDs included.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from pipeline.atomic import atomic_path
from pipeline.data.errors import DatasetError
from pipeline.data.tumor_types import TUMOR_TYPES
from pipeline.outputs import own_subfolder
from pipeline.phantoms.defaults import MIN_SIZE
from pipeline.phantoms.slices import PhantomPatient, patient_slices, phantom_cohort

FIELD_OF_VIEW_MM = 250.0
SLICE_THICKNESS_MM = 6.0
SLICE_SPACING_MM = 7.0
RESCALE_SLOPE = 0.5
RESCALE_INTERCEPT = -512.0
SERIES_NUMBER = 5
SERIES_DESCRIPTION = "T1 SE post-contrast axial"


def write_phantom_series(out_dir: Path, patients: int, slices: int, size: int, seed: int) -> list[Path]:
    """Phantom MR series, one per patient, as single-frame MR Image Storage files with realistic headers.

    Files go to ``<out_dir>/<PatientID>/<SeriesNumber>/<InstanceNumber>.dcm`` (Explicit VR Little Endian),
    each written atomically. Refuses (with a ``DatasetError``) a folder that already holds .dcm files, so no
    user file is overwritten, and (with ``UnsafeOutputPathError``, before anything is written) a patient or series
    folder that is a link: PatientIDs follow from the seed, so such a link can be planted in advance. Returns the
    files, patient after patient, in instance order.
    """
    out = Path(out_dir)
    if patients < 1 or slices < 1 or size < MIN_SIZE:
        raise ValueError(
            f"write_phantom_series: need patients >= 1, slices >= 1 and size >= {MIN_SIZE}, "
            f"got {patients}, {slices}, {size}"
        )
    if out.is_dir() and any(out.rglob("*.dcm")):
        raise DatasetError([f"{out}: already holds .dcm files; choose an empty or new folder"])
    cohort = phantom_cohort(patients, seed)
    folders = [own_subfolder(out, patient.pid, str(SERIES_NUMBER)) for patient in cohort]
    written: list[Path] = []
    for index, (patient, folder) in enumerate(zip(cohort, folders)):
        images = [image for image, _ in patient_slices(seed, index, patient.tumor_type, slices, size)]

        key = (seed, patients, slices, size, index)
        study = _study_header(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index))), patient)
        study.update(
            StudyInstanceUID=_uid(*key, "study"),
            SeriesInstanceUID=_uid(*key, "series"),
            FrameOfReferenceUID=_uid(*key, "frame of reference"),
        )
        geometry = _stack_geometry(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, index))), size)
        window = np.percentile(np.stack(images), [1.0, 99.5])
        for number, image in enumerate(images, start=1):
            dataset = _instance(study, geometry, image, number, slices, window, _uid(*key, "instance", number))
            path = folder / f"{number}.dcm"
            with atomic_path(path) as tmp:
                pydicom.dcmwrite(tmp, dataset, enforce_file_format=True)
            written.append(path)
    return written


def _study_header(rng: np.random.Generator, patient: PhantomPatient) -> dict[str, object]:
    """Patient, study and series attributes of one phantom patient, drawn from ``rng``."""
    study_date = datetime.date(2023, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 730)))
    age = int(rng.integers(20, 80))
    birth = study_date - datetime.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    study_time = f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00"
    return {
        "PatientName": f"PHANTOM^{patient.pid}",
        "PatientID": patient.pid,
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": "F" if rng.random() < 0.5 else "M",
        "PatientAge": f"{age:03d}Y",
        "StudyDate": study_date.strftime("%Y%m%d"),
        "StudyTime": study_time,
        "AccessionNumber": f"PH{int(rng.integers(10**6, 10**7))}",
        "StudyID": "1",
        "StudyDescription": "MRI HEAD with contrast",
        "ImageComments": f"phantom, tumour type {patient.tumor_type} ({TUMOR_TYPES[patient.tumor_type]})",
    }


def _stack_geometry(rng: np.random.Generator, size: int) -> dict[str, np.ndarray | float]:
    """Row and column directions, slice normal, pixel spacing and centre (LPS mm) of an axial stack, tilted."""
    tilt = np.deg2rad(rng.uniform(-12.0, 12.0))
    row = np.array([1.0, 0.0, 0.0])  # along a row: towards the patient's left (LPS +x)
    column = np.array([0.0, np.cos(tilt), np.sin(tilt)])  # down a column: towards posterior, tilted
    centre = np.array([rng.normal(0.0, 3.0), rng.normal(10.0, 5.0), rng.uniform(-10.0, 30.0)])
    return {
        "row": row,
        "column": column,
        "normal": np.cross(row, column),
        "spacing": FIELD_OF_VIEW_MM / size,
        "centre": centre,
    }


def _instance(
    study: dict[str, object],
    geometry: dict,
    image: np.ndarray,
    number: int,
    slices: int,
    window: np.ndarray,
    sop_instance_uid: str,
) -> Dataset:
    """The MR Image Storage instance ``number`` (1-based) of a series: headers and rescaled int16 pixels."""
    rows, columns = image.shape
    spacing = float(geometry["spacing"])
    offset = (number - 1 - (slices - 1) / 2) * SLICE_SPACING_MM
    position = (
        geometry["centre"]
        - geometry["row"] * spacing * (columns - 1) / 2
        - geometry["column"] * spacing * (rows - 1) / 2
        + geometry["normal"] * offset
    )
    stored = (image.astype(np.int32) - RESCALE_INTERCEPT) / RESCALE_SLOPE
    if stored.min() < np.iinfo(np.int16).min or stored.max() > np.iinfo(np.int16).max:
        raise ValueError("phantom intensities out of the int16 range of the stored values")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PIPELINE_PHANTOM"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        setattr(ds, keyword, study["StudyDate"])
    for keyword in ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime"):
        setattr(ds, keyword, study["StudyTime"])
    ds.Modality = "MR"
    ds.Manufacturer = "pipeline phantom"
    ds.ManufacturerModelName = "phantom"
    ds.InstitutionName = "Phantom Hospital"
    ds.ReferringPhysicianName = ""
    for keyword, value in study.items():
        setattr(ds, keyword, value)
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.BodyPartExamined = "HEAD"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = SLICE_THICKNESS_MM
    ds.SpacingBetweenSlices = SLICE_SPACING_MM
    ds.RepetitionTime = 550.0
    ds.EchoTime = 12.0
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = 1.5
    ds.ContrastBolusAgent = "Gd-DTPA"
    ds.PatientPosition = "HFS"
    ds.SeriesNumber = SERIES_NUMBER
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [_decimal(value) for value in position]
    ds.ImageOrientationPatient = [_decimal(value) for value in (*geometry["row"], *geometry["column"])]
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _decimal(float(position @ geometry["normal"]))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.PixelSpacing = [_decimal(spacing), _decimal(spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    low, high = (float(value) for value in window)
    ds.WindowCenter = _decimal((low + high) / 2)
    ds.WindowWidth = _decimal(high - low)
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = RESCALE_SLOPE
    ds.RescaleType = "US"
    ds.PixelData = stored.astype("<i2").tobytes()
    return ds


def _uid(*parts: object) -> str:
    """A UID under pydicom's root determined by ``parts``: the same arguments give the same UID."""
    return generate_uid(entropy_srcs=["/".join(["pipeline phantom", *map(str, parts)])])


def _decimal(value: float) -> str:
    """``value`` as a DICOM decimal string, rounded to 6 decimals."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
