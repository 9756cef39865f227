"""Whole scans in, masks with the scan's own geometry out: DICOM series to DICOM SEG, NIfTI volumes to NIfTI.

Each scan is segmented slice by slice with :class:`SliceSegmenter` along its acquisition's slice axis. A DICOM
series gives one SEG referencing its instances (and, on request, a NIfTI copy of the mask); a 3D NIfTI volume
gives a NIfTI mask with the volume's shape, affine and header geometry. Outputs mirror the input's folders
below the output folder, and each is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.atomic import OutputFolderFaultError, atomic_path
from pipeline.data.pixel_budget import refuse_oversized_scan
from pipeline.dicom.seg_writer import write_dicom_seg
from pipeline.dicom.series import DicomSeries, read_dicom_folder
from pipeline.inference.record import FAILED, WRITTEN, InputOutcome
from pipeline.inference.slice_segmenter import SliceSegmenter
from pipeline.outputs import output_path, safe_name
from pipeline.reports.figures import plot_mask_over_slices
from pipeline.user_errors import find_user_error

SEG_SUFFIX = "_seg.dcm"
NIFTI_MASK_SUFFIX = "_seg.nii.gz"
OVERLAY_SUFFIX = "_overlay.png"
# At most this many slices, evenly spaced through the series, are drawn on its overlay sheet.
OVERLAY_SLICES = 16
# Spacings within this relative tolerance are equal when choosing a volume's slice axis.
SPACING_RTOL = 1e-3


def series_outputs(
    series: DicomSeries, output_dir: Path, root: Path, nifti_copy: bool = False, overlay: bool = False
) -> list[Path]:
    """Where the SEG (then the NIfTI copy, then the overlay sheet) of ``series`` goes:
    ``<output_dir>/<folder>/<SeriesInstanceUID>_seg.dcm`` (``_seg.nii.gz``, ``_overlay.png``), ``<folder>`` being
    the series' folder below ``root``. The UID is a header value, so it is made a safe name first
    (:func:`~pipeline.outputs.safe_name`); ``UnsafeOutputPathError`` if a path would still lead out of
    ``output_dir``."""
    folder = Path(os.path.commonpath([str(file.parent) for file in series.files]))
    relative = folder.relative_to(root) if folder.is_relative_to(root) else Path()
    stem = safe_name(series.series_uid)
    suffixes = [SEG_SUFFIX] + [NIFTI_MASK_SUFFIX] * nifti_copy + [OVERLAY_SUFFIX] * overlay
    return [output_path(output_dir, relative, stem + suffix) for suffix in suffixes]


def segment_series(series: DicomSeries, outputs: list[Path], segmenter: SliceSegmenter) -> list[Path]:
    """Segment ``series`` and write its SEG to ``outputs[0]``, and, for the later ``outputs`` named as
    :func:`series_outputs` names them, the mask as NIfTI and a sheet of the slices with the mask's outline.

    The algorithm is named after the segmenter's bundle and its version.
    """
    mask = segmenter.segment(series.pixels.transpose(2, 1, 0), series.affine, slice_axis=2).transpose(2, 1, 0)
    written = [write_dicom_seg(series, mask, outputs[0], segmenter.name, segmenter.version)]
    for path in outputs[1:]:
        if path.name.endswith(OVERLAY_SUFFIX):
            shown = np.unique(np.linspace(0, len(mask) - 1, min(len(mask), OVERLAY_SLICES)).round().astype(int))
            numbers = series_numbers(series)
            titles = [f"{numbers[index]}: {int(mask[index].sum())} px" for index in shown]
            plot_mask_over_slices(series.pixels[shown], mask[shown], path, titles, title=series.label)
            written.append(path)
            continue
        image = nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)), series.affine)
        image.set_qform(series.affine, code=1)
        image.set_sform(series.affine, code=1)
        written.append(save_image(image, path))
    return written


def series_numbers(series: DicomSeries) -> list[str]:
    """A label per slice of ``series``: its InstanceNumber (single-frame), or its frame number (multi-frame)."""
    if len(series.datasets) == len(series.pixels):
        return [f"instance {dataset.get('InstanceNumber', index + 1)}" for index, dataset in enumerate(series.datasets)]
    return [f"slice {index + 1}" for index in range(len(series.pixels))]


def segment_dicom_folder(
    path: Path,
    output_dir: Path,
    segmenter: SliceSegmenter,
    nifti_copy: bool = False,
) -> tuple[list[Path], list[str]]:
    """One DICOM SEG per series found in ``path`` (and a NIfTI mask per series when ``nifti_copy``); returns the
    files written and the failure lines (from read_dicom_folder plus any series that failed).

    ``path`` is a DICOM file or a folder (searched with its subfolders). Outputs are placed by
    :func:`series_outputs` and written by :func:`segment_scans`, as ``infer`` writes them. Raises ``UserError``
    when ``path`` does not exist.
    """
    path = Path(path)
    series_list, failures = read_dicom_folder(path)
    root = path if path.is_dir() else path.parent
    outcomes: dict[Path | str, InputOutcome] = {
        series.series_uid: InputOutcome(
            series.label, [str(p) for p in series_outputs(series, output_dir, root, nifti_copy)]
        )
        for series in series_list
    }
    segment_scans([], series_list, outcomes, segmenter)
    written = [Path(output) for outcome in outcomes.values() if outcome.status == WRITTEN for output in outcome.outputs]
    return written, failures + [outcome.reason for outcome in outcomes.values() if outcome.status == FAILED]


def segment_scans(
    volumes: Sequence[Path],
    series: Sequence[DicomSeries],
    outcomes: dict[Path | str, InputOutcome],
    segmenter: SliceSegmenter,
    on_each: Callable[[], object] = lambda: None,
) -> None:
    """Segment the NIfTI ``volumes`` and the DICOM ``series`` with ``segmenter`` into their planned outputs,
    marking each outcome written, or failed with the reason (the others go on), and calling ``on_each`` after
    each (the record is rewritten there). A full or read-only output folder (``OutputFolderFaultError``) stops
    them all."""
    for path in volumes:
        try:
            segment_nifti_volume(path, Path(outcomes[path].outputs[0]), segmenter)
            outcomes[path].status = WRITTEN
        except OutputFolderFaultError:  # a full or read-only output folder fails every later scan alike
            raise
        except Exception as error:  # whatever one volume trips on is reported with it, not raised
            outcomes[path].status, outcomes[path].reason = FAILED, failure_line(str(path), error)
        on_each()
    for item in series:
        outcome = outcomes[item.series_uid]
        try:
            segment_series(item, [Path(path) for path in outcome.outputs], segmenter)
            outcome.status = WRITTEN
        except OutputFolderFaultError:
            raise
        except Exception as error:  # an odd header of one series must not cost the others their SEG
            outcome.status, outcome.reason = FAILED, failure_line(item.label, error)
        on_each()


def failure_line(name: str, error: Exception) -> str:
    """The line reporting that the input ``name`` could not be segmented, with the error's message."""
    user_error = find_user_error(error)
    return f"{name}: could not be segmented: {user_error or f'{type(error).__name__}: {error}'}"


def volume_dimensions(path: Path) -> tuple[int, ...]:
    """The shape of the NIfTI image at ``path`` without its trailing singleton dimensions beyond the third
    (a (256, 256, 20, 1) image is a 3D volume), read from the header alone."""
    shape = tuple(nib.load(path).shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def slice_axis(spacing: tuple[float, ...]) -> int:
    """The voxel axis with the largest spacing (the last of those within ``SPACING_RTOL`` of it): the axis a
    stack of 2D acquisitions was taken along."""
    largest = max(spacing)
    return max(axis for axis, value in enumerate(spacing) if np.isclose(value, largest, rtol=SPACING_RTOL, atol=0))


def segment_nifti_volume(path: Path, output: Path, segmenter: SliceSegmenter) -> Path:
    """Segment the 3D NIfTI volume at ``path`` and write the uint8 mask to ``output`` with the input's shape,
    affine, qform and sform; return ``output``.

    The volume is segmented along its :func:`slice_axis`, each slice brought to the training orientation by the
    affine. A volume of one slice (third dimension 1) is a 2D slice: it is segmented as stored, as a 2D NIfTI
    slice file is. Raises ``ValueError`` for an image that is not 3D (trailing singleton dimensions aside).
    """
    image = nib.load(path)
    dimensions = volume_dimensions(path)
    if len(dimensions) != 3:
        raise ValueError(f"{path}: a {len(dimensions)}D NIfTI of shape {tuple(image.shape)}, not a 3D volume")
    axis = 2 if dimensions[2] == 1 else slice_axis(tuple(float(value) for value in image.header.get_zooms()[:3]))
    refuse_oversized_scan(dimensions, axis)
    volume = np.asarray(image.dataobj, dtype=np.float32).reshape(dimensions)
    if dimensions[2] == 1:
        mask = segmenter.segment_slices(volume.transpose(2, 0, 1)).transpose(1, 2, 0)
    else:
        mask = segmenter.segment(volume, image.affine, axis)
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    header["cal_min"], header["cal_max"] = 0, 1
    result = type(image)(mask.reshape(image.shape), image.affine, header)
    result.set_qform(image.get_qform(), code=int(image.header["qform_code"]))
    result.set_sform(image.get_sform(), code=int(image.header["sform_code"]))
    return save_image(result, output)


def save_image(image: nib.Nifti1Image, path: Path) -> Path:
    """Save ``image`` to ``path`` (gzipped for .nii.gz) atomically and return ``path``."""
    with atomic_path(path) as temporary:
        nib.save(image, temporary)
    return Path(path)
