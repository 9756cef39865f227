"""DICOM Segmentation (SEG) objects for a segmented MR series, written with highdicom.

The SEG holds one binary segment, 'tumour', coded as SNOMED CT Neoplasm, with the algorithm that made it. It
references every source instance (empty slices included) and shares the source's StudyInstanceUID and
FrameOfReferenceUID, so viewers (3D Slicer, OHIF, PACS viewers) lay it over the series it came from.

highdicom and pydicom's code dictionary are imported when a SEG is made, not with this module: together they cost
about as much start-up as the rest of a one-slice ``infer`` run's own imports, and a run of 2D slices makes no SEG.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.uid import generate_uid

from pipeline import __version__
from pipeline.atomic import atomic_path
from pipeline.dicom.series import DicomSeries

if TYPE_CHECKING:
    import highdicom

SEGMENT_LABEL = "tumour"
# Segment series are numbered after their source series, as scanners number derived series.
SERIES_NUMBER_OFFSET = 1000
MAX_SERIES_NUMBER = 2**31 - 1
# LO (long string) elements hold at most 64 characters.
MAX_LONG_STRING = 64


def tumour_segment(algorithm_name: str, algorithm_version: str) -> highdicom.seg.SegmentDescription:
    """Segment 1, 'tumour': a morphologically abnormal structure of type Neoplasm in the brain, found by the
    artificial-intelligence algorithm ``algorithm_name`` ``algorithm_version``."""
    import highdicom
    from pydicom.sr.codedict import codes

    return highdicom.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.cid7151.Neoplasm,
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name=algorithm_name[:MAX_LONG_STRING],
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm_version[:MAX_LONG_STRING],
        ),
        anatomic_regions=[codes.SCT.Brain],
    )


def source_frame_masks(series: DicomSeries, mask: np.ndarray) -> np.ndarray:
    """``mask`` (slices in ``series.pixels`` order) rearranged as highdicom pairs frames with the sources: one
    per single-frame instance in ``series.datasets`` order, or one per frame of a single multi-frame instance
    in its own frame order (found from each frame's ImagePositionPatient)."""
    if mask.shape != series.pixels.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the series' {series.pixels.shape}")
    if len(series.datasets) == len(mask):
        return mask
    if len(series.datasets) != 1:
        raise ValueError(f"{len(series.datasets)} multi-frame instances in one series; a SEG is made for one")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ series.affine
    step = lps[:3, 2]
    frames = series.datasets[0].PerFrameFunctionalGroupsSequence
    positions = np.array([[float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] for frame in frames])
    order = np.rint((positions - lps[:3, 3]) @ step / (step @ step)).astype(int)
    if sorted(order.tolist()) != list(range(len(mask))):
        raise ValueError("the frames' positions do not match the series' slices")
    return mask[order]


def write_dicom_seg(
    series: DicomSeries, mask: np.ndarray, path: Path, algorithm_name: str, algorithm_version: str
) -> Path:
    """mask: uint8 (slices, rows, cols) in series.pixels order. BINARY SEG with one segment 'tumour'
    (SNOMED CT Neoplasm), referencing every source instance, same Study and FrameOfReference UIDs.

    Every slice gets a frame, empty ones too. The SEG is a new series in the source's study, numbered
    ``1000 + SeriesNumber`` of the source. It is written atomically to ``path``, which is returned.
    """
    import highdicom

    if series.frame_of_reference_uid is None:
        raise ValueError("its instances have no FrameOfReferenceUID, which a SEG must share with its source")
    source = series.datasets[0]
    source_number = int(source.get("SeriesNumber") or 0)
    description = f"{SEGMENT_LABEL} SEG, {algorithm_name} {algorithm_version}"
    segmentation = highdicom.seg.Segmentation(
        source_images=list(series.datasets),
        pixel_array=source_frame_masks(series, np.asarray(mask, dtype=np.uint8)),
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[tumour_segment(algorithm_name, algorithm_version)],
        series_instance_uid=generate_uid(),
        series_number=min(source_number + SERIES_NUMBER_OFFSET, MAX_SERIES_NUMBER),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="MONAI bundle",
        manufacturer_model_name=algorithm_name[:MAX_LONG_STRING],
        software_versions=f"pipeline {__version__}",
        device_serial_number="0000",  # required by the Enhanced Equipment module; software has none
        content_label=SEGMENT_LABEL.upper(),
        content_description=description[:MAX_LONG_STRING],
        series_description=description[:MAX_LONG_STRING],
        omit_empty_frames=False,
    )
    path = Path(path)
    with atomic_path(path) as temporary:
        segmentation.save_as(temporary, enforce_file_format=True)
    return path
