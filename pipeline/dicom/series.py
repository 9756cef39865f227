"""MR image series read from DICOM files: grouped by series, slices in spatial order, real intensities, RAS geometry.

A folder may hold several studies and series, in any file names and any ``InstanceNumber`` order. Every file
is read on its own; whatever makes a file or a whole series unusable becomes one line naming it and the reason,
and the good series are still returned. Single-frame instances (MR Image Storage and other single-channel image
storage) and enhanced multi-frame instances (per-frame and shared functional groups) are both read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import (
    HTJ2K,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from pipeline.data.pixel_budget import OversizedScanError, refuse_oversized_scan
from pipeline.outputs import one_line
from pipeline.user_errors import UserError

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index of the files beside it, not an instance
# Integer pixels, and the float pixels of parametric and derived images (which may hold NaN).
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# The Python packages that decode each compressed transfer syntax (pip names), named when none is installed.
_DECODER_PACKAGES = {
    **dict.fromkeys(JPEGTransferSyntaxes, "pylibjpeg with pylibjpeg-libjpeg, or python-gdcm"),
    **dict.fromkeys(JPEGLSTransferSyntaxes, "pylibjpeg with pylibjpeg-libjpeg, pyjpegls, or python-gdcm"),
    **dict.fromkeys(JPEG2000TransferSyntaxes, "pylibjpeg with pylibjpeg-openjpeg, or python-gdcm"),
    **dict.fromkeys((HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL), "pylibjpeg with pylibjpeg-openjpeg"),
    RLELossless: "pylibjpeg with pylibjpeg-rle",
}

# Tolerances of the geometry checks: direction cosines, pixel spacing (relative), positions (mm).
_ORIENTATION_TOLERANCE = 1e-4
_SPACING_TOLERANCE = 1e-4
_SAME_POSITION_MM = 0.01
# A slice may sit this far (mm, or this fraction of the slice step if larger) from an even stack.
_UNEVEN_MM = 0.02
_UNEVEN_FRACTION = 0.02


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """One MR image series, its slices ordered along the slice normal (ImagePositionPatient), not by file name.

    Args:
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        frame_of_reference_uid: FrameOfReferenceUID, ``None`` where the instances lack it.
        files: the source files, one per instance (one file for an enhanced multi-frame series), in slice order.
        datasets: the source instances with their full headers, in slice order (an enhanced multi-frame
            series: one dataset holding all frames).
        pixels: float32, shape (slices, rows, cols), RescaleSlope and RescaleIntercept applied.
        affine: 4x4 float64, RAS+ mm (the nibabel/MONAI convention), mapping the index (col, row, slice) to the
            patient position: ``nibabel.Nifti1Image(pixels.transpose(2, 1, 0), affine)`` is the series with its
            geometry.
        label: names the series in messages: ``<folder> series <SeriesNumber> '<SeriesDescription>' (<uid>)``.
    """

    series_uid: str
    study_uid: str
    frame_of_reference_uid: str | None
    files: tuple[Path, ...]
    datasets: tuple[Dataset, ...]
    pixels: np.ndarray
    affine: np.ndarray
    label: str


class _Unusable(Exception):
    """A file or series that cannot be read, with the reason as its message."""


class UnusableInstanceError(UserError, ValueError):
    """One DICOM instance that cannot be a slice of a segmented series, with the reason as its message."""


@dataclass(eq=False)
class _Frame:
    """One 2D image of an instance with its plane: the unit that is grouped, checked and ordered."""

    file: Path
    dataset: Dataset
    index: int  # frame index inside the instance
    multi_frame: bool
    stored: np.ndarray  # (rows, cols), stored values
    slope: float
    intercept: float
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient: row direction, then column direction
    spacing: tuple[float, float]  # PixelSpacing: between rows, between columns (mm)
    step: float | None  # SpacingBetweenSlices, else SliceThickness, else None

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` is a DICOM Part 10 file ('DICM' at byte 128) or has a .dcm suffix."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def read_dicom_folder(path: Path, recursive: bool = True) -> tuple[list[DicomSeries], list[str]]:
    """Every readable MR image series in ``path`` (a DICOM file or a folder, grouped by SeriesInstanceUID), and
    one line per file or series that could not be used, starting with its path and saying why.

    In a folder, the files taken for DICOM are those :func:`is_dicom_file` accepts, in subfolders too when
    ``recursive``, hidden files and folders left out; a folder holding none gives one line saying so. DICOMDIR
    index files are passed over. Raises ``UserError`` only when ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        found = path.rglob("*") if recursive else path.iterdir()
        files = sorted(
            item
            for item in found
            if item.is_file()
            and not any(part.startswith(".") for part in item.relative_to(path).parts)
            and is_dicom_file(item)
        )
        if not files:
            where = "in this folder or below" if recursive else "in this folder"
            return [], [f"{path}: no DICOM files {where} (none with 'DICM' at byte 128 or a .dcm suffix)"]
    else:
        files = [path]

    failures: list[str] = []
    by_series: dict[str, list[_Frame]] = defaultdict(list)
    first_of: dict[str, tuple[Path, str]] = {}
    for file in files:
        try:
            dataset = _read_dataset(file)
            if dataset is None:
                continue
            instance = str(dataset.get("SOPInstanceUID", ""))
            pixels = _pixel_digest(dataset)
            if instance and instance in first_of:
                first, first_pixels = first_of[instance]
                if pixels == first_pixels:
                    raise _Unusable(f"same SOPInstanceUID as {first} (a copy); read once")
                raise _Unusable(
                    f"same SOPInstanceUID as {first} but different pixel data: two images claim one identity, so "
                    f"this one is left out and the series keeps {first}"
                )
            frames = _frames(file, dataset)
            if "SeriesInstanceUID" not in dataset:
                raise _Unusable("no SeriesInstanceUID, so it belongs to no series")
        except _Unusable as error:
            failures.append(f"{file}: {error}")
            continue
        if instance:
            first_of[instance] = (file, pixels)
        by_series[str(dataset.SeriesInstanceUID)].extend(frames)

    series: list[DicomSeries] = []
    for uid, frames in by_series.items():
        try:
            series.append(_assemble(uid, frames))
        except _Unusable as error:
            failures.append(f"{_label(uid, frames)}: {error}")
    series.sort(key=lambda item: (_folder(item.files), _series_number(item.datasets[0]), item.series_uid))
    return series, failures


def _pixel_digest(dataset: Dataset) -> str:
    """The SHA-256 of the stored pixel data of ``dataset`` (empty without any), to tell a copy from an impostor."""
    pixels = dataset.get("PixelData") or dataset.get("FloatPixelData") or dataset.get("DoubleFloatPixelData") or b""
    return hashlib.sha256(pixels).hexdigest() if pixels else ""


def check_instance(dataset: Dataset) -> None:
    """Raise ``UnusableInstanceError`` with the reason :func:`read_dicom_folder` would give when ``dataset`` is
    not a usable image instance (not an image, no or undecodable pixel data, colour, no plane in 3D), or when
    its pixel values are not all finite (NaN or infinite float pixels)."""
    try:
        frames = _frames(Path(str(dataset.get("SOPInstanceUID", "instance"))), dataset)
    except _Unusable as error:
        raise UnusableInstanceError(str(error)) from None
    bad = sum(int(np.count_nonzero(~np.isfinite(frame.stored))) for frame in frames)
    if bad:
        raise UnusableInstanceError(f"{bad} pixels are NaN or infinite")


def _read_dataset(file: Path) -> Dataset | None:
    """The dataset in ``file`` (``None`` for a DICOMDIR); ``_Unusable`` when it is not DICOM or not readable.

    pydicom's own parser warnings are kept quiet: a file it cannot use is named with its reason by the caller, in
    the run's one error line or record, instead of a warning and a log line of pydicom's before it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parser_log = logging.getLogger("pydicom")
        level = parser_log.level
        parser_log.setLevel(logging.ERROR)
        try:
            return _parse_dataset(file)
        finally:
            parser_log.setLevel(level)


def _parse_dataset(file: Path) -> Dataset | None:
    try:
        dataset = pydicom.dcmread(file)
    except InvalidDicomError:
        # A dataset written without the Part 10 preamble and header is still DICOM if it parses as one.
        try:
            dataset = pydicom.dcmread(file, force=True)
        except Exception as error:  # whatever the parser trips on, the file is not usable DICOM
            reason = " ".join(str(error).split())
            raise _Unusable(f"not a DICOM file (no 'DICM' at byte 128, and it does not parse: {reason})") from None
        if "SOPClassUID" not in dataset:
            raise _Unusable("not a DICOM file (no 'DICM' at byte 128 and no SOPClassUID)") from None
    except Exception as error:  # truncated or corrupt files fail in many ways inside the parser
        raise _Unusable(f"unreadable DICOM file: {type(error).__name__}: {' '.join(str(error).split())}") from None
    sop_class = str(dataset.get("SOPClassUID", ""))
    if not sop_class:
        raise _Unusable("incomplete DICOM file: no SOPClassUID (truncated?)")
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return None
    return dataset


def _sop_class_text(dataset: Dataset) -> str:
    uid = UID(str(dataset.SOPClassUID))
    return f"{uid.name} ({uid})" if uid.name != str(uid) else f"SOP class {uid}"


def _is_known_non_image(dataset: Dataset) -> bool:
    """True for a standard SOP class that is not image storage (SR, PDF, SEG, RT, presentation states...)."""
    uid = UID(str(dataset.SOPClassUID))
    return uid.name != str(uid) and "Image Storage" not in uid.name


def _frames(file: Path, dataset: Dataset) -> list[_Frame]:
    """The 2D images of one instance with their planes and stored pixels; ``_Unusable`` with the reason."""
    if _is_known_non_image(dataset):
        raise _Unusable(
            f"not an image: {_sop_class_text(dataset)}; only single-channel image storage (MR and the like) is read"
        )
    if not any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS):
        raise _Unusable(f"missing pixel data: {_sop_class_text(dataset)} without a PixelData element")
    samples = int(dataset.get("SamplesPerPixel", 1))
    if samples != 1:
        photometric = dataset.get("PhotometricInterpretation", "?")
        raise _Unusable(
            f"colour image (SamplesPerPixel {samples}, {photometric}); only single-channel images such as MR are read"
        )
    _check_decoder(dataset)
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    multi_frame = "PerFrameFunctionalGroupsSequence" in dataset or "SharedFunctionalGroupsSequence" in dataset
    if count > 1 and not multi_frame:
        raise _Unusable(f"{count} frames but no functional groups giving each frame's position; cannot place them")
    planes = [_frame_plane(dataset, index, multi_frame) for index in range(count)]
    try:
        refuse_oversized_scan((count, int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))), slice_axis=0)
    except OversizedScanError as error:
        raise _Unusable(str(error)) from None
    try:
        stored = pixel_array(dataset)
    except Exception as error:  # every decoder plugin has its own errors
        syntax = _transfer_syntax(dataset)
        reason = " ".join(str(error).split())
        others = f"; another decoder may read it: {_DECODER_PACKAGES[syntax]}" if syntax in _DECODER_PACKAGES else ""
        raise _Unusable(f"could not decode the pixel data ({syntax.name}): {reason}{others}") from None
    stored = stored.reshape(count, *stored.shape[-2:])
    return [_Frame(file, dataset, index, count > 1, stored[index], *plane) for index, plane in enumerate(planes)]


def _transfer_syntax(dataset: Dataset) -> UID:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(syntax)) if syntax else pydicom.uid.ImplicitVRLittleEndian


def _check_decoder(dataset: Dataset) -> None:
    """``_Unusable`` naming the transfer syntax and the packages to install when no decoder here reads it."""
    syntax = _transfer_syntax(dataset)
    if not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise _Unusable(
            f"pixel data compressed as {syntax.name} ({syntax}), which pydicom cannot decode; "
            "export the series uncompressed"
        ) from None
    if decoder.is_available:
        return
    packages = _DECODER_PACKAGES.get(syntax) or "; ".join(decoder.missing_dependencies)
    raise _Unusable(
        f"pixel data compressed as {syntax.name} ({syntax}) and no decoder for it is installed: install {packages}"
    )


def _functional_group(dataset: Dataset, index: int, keyword: str) -> Dataset | None:
    """The item of the functional group ``keyword`` for frame ``index``: per-frame first, then shared."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame) and keyword in per_frame[index]:
        return per_frame[index][keyword][0]
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared and keyword in shared[0]:
        return shared[0][keyword][0]
    return None


def _frame_plane(
    dataset: Dataset, index: int, multi_frame: bool
) -> tuple[float, float, np.ndarray, np.ndarray, tuple[float, float], float | None]:
    """(slope, intercept, position, orientation, pixel spacing, slice step) of frame ``index``."""
    if multi_frame:
        sources = {
            "ImagePositionPatient": _functional_group(dataset, index, "PlanePositionSequence"),
            "ImageOrientationPatient": _functional_group(dataset, index, "PlaneOrientationSequence"),
            "PixelSpacing": _functional_group(dataset, index, "PixelMeasuresSequence"),
        }
        transform = _functional_group(dataset, index, "PixelValueTransformationSequence") or dataset
        measures = sources["PixelSpacing"] or Dataset()
        where = f"frame {index + 1}: "
    else:
        sources = dict.fromkeys(("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"), dataset)
        transform = measures = dataset
        where = ""
    missing = [keyword for keyword, source in sources.items() if source is None or keyword not in source]
    if missing:
        raise _Unusable(f"{where}no {' or '.join(missing)}, so the image cannot be placed in 3D")
    try:
        position = np.array([float(value) for value in sources["ImagePositionPatient"].ImagePositionPatient])
        orientation = np.array([float(value) for value in sources["ImageOrientationPatient"].ImageOrientationPatient])
        spacing = tuple(float(value) for value in sources["PixelSpacing"].PixelSpacing)
        slope = float(transform.get("RescaleSlope", 1.0))
        intercept = float(transform.get("RescaleIntercept", 0.0))
        step = measures.get("SpacingBetweenSlices") or measures.get("SliceThickness")
        step = float(step) if step else None
    except (TypeError, ValueError) as error:
        raise _Unusable(f"{where}unreadable geometry or rescale values: {error}") from None
    if position.shape != (3,) or orientation.shape != (6,) or len(spacing) != 2:
        raise _Unusable(
            f"{where}malformed geometry: ImagePositionPatient needs 3 values, ImageOrientationPatient 6 and "
            f"PixelSpacing 2 (got {position.size}, {orientation.size}, {len(spacing)})"
        )
    row, column = orientation[:3], orientation[3:]
    unit = max(abs(np.linalg.norm(row) - 1.0), abs(np.linalg.norm(column) - 1.0))
    if unit > 1e-3 or abs(float(row @ column)) > 1e-3:
        raise _Unusable(f"{where}ImageOrientationPatient {list(orientation)} is not two orthogonal unit vectors")
    if min(spacing) <= 0:
        raise _Unusable(f"{where}PixelSpacing {list(spacing)} is not positive")
    if not np.all(np.isfinite(position)) or not np.isfinite(slope) or not np.isfinite(intercept) or slope == 0:
        raise _Unusable(f"{where}invalid ImagePositionPatient or rescale values")
    return slope, intercept, position, orientation, spacing, step


def _series_number(dataset: Dataset) -> int:
    try:
        return int(dataset.get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _folder(files) -> str:
    return os.path.commonpath([str(Path(file).parent) for file in files])


def _label(uid: str, frames: list[_Frame]) -> str:
    """``<folder> series <SeriesNumber> '<SeriesDescription>' (<uid>)``."""
    first = frames[0].dataset
    number = first.get("SeriesNumber")
    description = str(first.get("SeriesDescription", "") or "")
    text = f"{_folder([frame.file for frame in frames])} series"
    if number is not None and str(number) != "":
        text += f" {one_line(number)}"
    if description:
        text += f" '{one_line(description)}'"
    return f"{text} ({one_line(uid)})"


def _frame_names(frames: list[_Frame]) -> str:
    """The files of ``frames`` (with the frame number inside a multi-frame file), at most three named."""
    names = [frame.file.name + (f" frame {frame.index + 1}" if frame.multi_frame else "") for frame in frames]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _distinct(values: list[tuple[float, ...]], frames: list[_Frame], tolerance: float, relative: bool) -> list:
    """Groups of ``frames`` with the same value (within ``tolerance``), in order of first appearance."""
    groups: list[tuple[tuple[float, ...], list[_Frame]]] = []
    for value, frame in zip(values, frames):
        for reference, members in groups:
            scale = max(map(abs, reference)) if relative else 1.0
            if np.allclose(value, reference, rtol=0.0, atol=tolerance * scale):
                members.append(frame)
                break
        else:
            groups.append((value, [frame]))
    return groups


def _check_consistent(frames: list[_Frame]) -> None:
    """``_Unusable`` when the frames of one series differ in size, orientation or pixel spacing."""
    checks = (
        ("sizes", [frame.stored.shape for frame in frames], 0.0, False, lambda v: f"{v[0]}x{v[1]}"),
        (
            "orientations (ImageOrientationPatient)",
            [tuple(frame.orientation) for frame in frames],
            _ORIENTATION_TOLERANCE,
            False,
            lambda v: "[" + ", ".join(f"{x:.4g}" for x in v) + "]",
        ),
        (
            "pixel spacings",
            [frame.spacing for frame in frames],
            _SPACING_TOLERANCE,
            True,
            lambda v: f"{v[0]:.4g}x{v[1]:.4g} mm",
        ),
    )
    for what, values, tolerance, relative, show in checks:
        groups = _distinct(values, frames, tolerance, relative)
        if len(groups) > 1:
            listed = "; ".join(f"{show(value)} in {_frame_names(members)}" for value, members in groups)
            raise _Unusable(f"inconsistent geometry: slices of different {what}: {listed}")


def _assemble(uid: str, frames: list[_Frame]) -> DicomSeries:
    """The series of ``frames``, checked and ordered along the slice normal; ``_Unusable`` with the reason."""
    _check_consistent(frames)
    first = frames[0]
    normal = first.normal
    frames = sorted(frames, key=lambda frame: float(frame.position @ normal))
    depths = np.array([float(frame.position @ normal) for frame in frames])
    gaps = np.diff(depths)
    for index in np.flatnonzero(gaps < _SAME_POSITION_MM):
        pair = frames[index : index + 2]
        raise _Unusable(
            f"inconsistent geometry: two slices at the same position ({depths[index]:.2f} mm along the slice "
            f"normal): {_frame_names(pair)}; a series with several stacks, echoes or time points is not one volume"
        )
    positions = np.stack([frame.position for frame in frames])
    if len(frames) > 1:
        step = (positions[-1] - positions[0]) / (len(frames) - 1)
        expected = positions[0] + np.arange(len(frames))[:, None] * step
        off = np.linalg.norm(positions - expected, axis=1)
        if off.max() > max(_UNEVEN_MM, _UNEVEN_FRACTION * float(np.linalg.norm(step))):
            worst = int(off.argmax())
            raise _Unusable(
                f"inconsistent geometry: uneven slice positions (gaps from {gaps.min():.3g} to {gaps.max():.3g} mm "
                f"along the slice normal; {_frame_names([frames[worst]])} is {off[worst]:.3g} mm off an even "
                "stack): a missing or extra slice?"
            )
    else:
        step = normal * (first.step or 1.0)
    row_spacing, column_spacing = first.spacing
    lps = np.eye(4)
    lps[:3, 0] = first.orientation[:3] * column_spacing
    lps[:3, 1] = first.orientation[3:] * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    pixels = np.stack(
        [frame.stored.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.intercept) for frame in frames]
    )
    datasets = list({id(frame.dataset): frame.dataset for frame in frames}.values())
    files = list(dict.fromkeys(frame.file for frame in frames))
    reference = first.dataset.get("FrameOfReferenceUID")
    return DicomSeries(
        series_uid=uid,
        study_uid=str(first.dataset.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(reference) if reference else None,
        files=tuple(files),
        datasets=tuple(datasets),
        pixels=pixels.astype(np.float32, copy=False),
        affine=affine,
        label=_label(uid, frames),
    )
