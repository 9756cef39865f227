"""Read every slice pair, check its content, and fill in its tumour type and patient id.

Faults found here, one line each naming the file: unreadable file, a multi-channel image, NaN or infinite
pixels, a mask whose shape differs from the image's, a mask that is not binary (values {0, 1} and {0, 255}
both count as binary), a slice missing from the meta table, an empty patient id and a patient given two
tumour types. A grey (for example resampled) mask of an image file or NIfTI pair is accepted instead when
``binarize`` is set: once every check has passed, :func:`binarize_masks` reads it again and thresholds it at
half its maximum into ``binarized_masks/``; the user's file stays as it is. ``.mat`` masks are MATLAB
logicals, so a non-binary one is a damaged file and is always refused.
"""

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from pipeline.atomic import atomic_path
from pipeline.data.figshare import MAX_SIDE, FigshareFormatError, read_figshare_slice
from pipeline.data.meta import MetaTable
from pipeline.data.nifti import save_nifti
from pipeline.data.sources import UNKNOWN_TUMOR_TYPE, LayoutKind, SliceRecord, file_stem
from pipeline.data.tumor_types import tumor_type_name
from pipeline.outputs import output_path

logger = logging.getLogger(__name__)

BINARIZED_MASK_DIR = "binarized_masks"
BINARY_VALUE_SETS = ({0, 1}, {0, 255})


def inspect_slices(
    records: Sequence[SliceRecord], kind: LayoutKind, meta: MetaTable | None = None, binarize: bool = False
) -> tuple[list[SliceRecord], list[str]]:
    """Check every pair's content; return the records completed with tumour type, patient and shape, and problems.

    For ``.mat`` slices the tumour type and patient come from the file. For image files and NIfTI pairs they
    come from ``meta`` when given; otherwise the tumour type is ``UNKNOWN_TUMOR_TYPE`` and the patient id is the
    slice id. With ``binarize`` a grey mask passes; nothing is written here (see :func:`binarize_masks`).
    """
    checked: list[SliceRecord] = []
    problems: list[str] = []
    for record in records:
        if kind is LayoutKind.MAT:
            result, faults = _inspect_mat(record)
        else:
            result, faults = _inspect_pair(record, kind, meta, binarize)
        problems += faults
        if result is not None and not faults:
            checked.append(result)
    problems += _patients_with_two_types(checked) if kind is LayoutKind.MAT else []
    return checked, problems


def binarize_masks(records: Sequence[SliceRecord], kind: LayoutKind, folder: Path) -> list[SliceRecord]:
    """Threshold each grey mask of ``records`` at half its maximum into ``folder``; return the records, those
    records pointing at their new mask. Binary masks, and ``.mat`` slices, are kept as they are."""
    if kind is LayoutKind.MAT:
        return list(records)
    reader = _read_image_file if kind is LayoutKind.IMAGE_FILES else _read_nifti
    binarized = []
    for record in records:
        mask = reader(record.label)
        if not _is_binary(mask):
            record = replace(record, label=_write_binarized(record.label, mask, kind, folder))
        binarized.append(record)
    return binarized


def read_pair(record: SliceRecord, kind: LayoutKind) -> tuple[np.ndarray, np.ndarray]:
    """Read a slice's image and mask arrays: display orientation (rows, cols) for ``.mat`` and image files."""
    if kind is LayoutKind.MAT:
        figshare_slice = read_figshare_slice(record.image)
        return figshare_slice.image, figshare_slice.mask
    reader = _read_image_file if kind is LayoutKind.IMAGE_FILES else _read_nifti
    return reader(record.image), reader(record.label)


def _inspect_mat(record: SliceRecord) -> tuple[SliceRecord | None, list[str]]:
    try:
        figshare_slice = read_figshare_slice(record.image)
    except (FigshareFormatError, OSError) as error:
        return None, [str(error) if str(error).startswith(str(record.image)) else f"{record.image}: {error}"]
    if not figshare_slice.pid:
        return None, [f"{record.image}: empty patient id (cjdata.PID)"]
    return replace(
        record, tumor_type=figshare_slice.tumor_type, pid=figshare_slice.pid, shape=figshare_slice.image.shape
    ), []


def _inspect_pair(
    record: SliceRecord, kind: LayoutKind, meta: MetaTable | None, binarize: bool
) -> tuple[SliceRecord | None, list[str]]:
    reader = _read_image_file if kind is LayoutKind.IMAGE_FILES else _read_nifti
    problems = []
    arrays = {}
    for path in (record.image, record.label):
        try:
            arrays[path] = reader(path)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        return None, problems
    image, mask = arrays[record.image], arrays[record.label]
    if not np.isfinite(image).all():
        problems.append(f"{record.image}: image holds {np.count_nonzero(~np.isfinite(image))} NaN or infinite pixels")
    if not np.isfinite(mask).all():
        problems.append(f"{record.label}: mask holds {np.count_nonzero(~np.isfinite(mask))} NaN or infinite pixels")
    if mask.shape != image.shape:
        problems.append(f"{record.label}: mask shape {mask.shape} differs from image shape {image.shape}")
    if problems:
        return None, problems
    if not _is_binary(mask):
        values = np.unique(mask)
        shown = values[:6].tolist()
        if not binarize:
            return None, [
                f"{record.label}: mask is not binary ({len(values)} distinct values, e.g. {shown}); expected "
                f"{{0, 1}} or {{0, 255}} (pass --binarize to threshold it at half its maximum)"
            ]
        logger.warning("%s: mask is not binary (values e.g. %s); it will be thresholded", record.label, shown)

    tumor_type, pid = UNKNOWN_TUMOR_TYPE, record.slice_id
    if meta is not None:
        row = meta.rows.get(record.slice_id)
        if row is None:
            return None, [f"{record.image}: slice {record.slice_id!r} has no row in {meta.path}"]
        tumor_type = row.tumor_type if row.tumor_type is not None else UNKNOWN_TUMOR_TYPE
        pid = row.pid if row.pid is not None else record.slice_id
    return replace(record, tumor_type=tumor_type, pid=pid, shape=image.shape), []


def _is_binary(mask: np.ndarray) -> bool:
    values = set(np.unique(mask).tolist())
    return any(values <= allowed for allowed in BINARY_VALUE_SETS)


def _read_image_file(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error})") from None
    if array.ndim != 2:
        raise ValueError(f"{path}: has {array.shape[-1]} channels, expected one greyscale channel")
    return array


def _read_nifti(path: Path) -> np.ndarray:
    try:
        image = nib.load(path)
        shape = image.shape
        # Check the header's claim before reading: a damaged or hostile header may promise gigabytes.
        array = np.asanyarray(image.dataobj) if max(shape, default=0) <= MAX_SIDE else None
    except Exception as error:  # nibabel raises many kinds for a damaged file; each one means "cannot read it"
        raise ValueError(f"{path}: cannot be read as NIfTI ({type(error).__name__}: {_one_line(error)})") from None
    if array is None:
        raise ValueError(f"{path}: has shape {shape}, larger than the {MAX_SIDE} x {MAX_SIDE} limit of a slice")
    # A 2D slice is often stored as (x, y, 1); its trailing singleton axes carry nothing.
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{path}: has shape {array.shape}, expected a 2D slice")
    return array


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _write_binarized(source: Path, mask: np.ndarray, kind: LayoutKind, folder: Path) -> Path:
    binary = mask > mask.max() / 2
    if kind is LayoutKind.IMAGE_FILES:
        target = output_path(folder, f"{file_stem(source)}.png")
        with atomic_path(target) as temporary:
            Image.fromarray(binary.astype(np.uint8) * 255).save(temporary, format="PNG")
        return target
    original = nib.load(source)
    target = output_path(folder, f"{file_stem(source)}.nii.gz")
    save_nifti(binary.astype(np.uint8), target, affine=original.affine)
    return target


def _patients_with_two_types(records: Sequence[SliceRecord]) -> list[str]:
    files_by_type: dict[str, dict[int, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        files_by_type[record.pid][record.tumor_type].append(record.image)
    problems = []
    for pid, by_type in files_by_type.items():
        if len(by_type) < 2:
            continue
        (first_type, first_files), *others = sorted(by_type.items(), key=lambda item: -len(item[1]))
        for code, files in others:
            more = f" (and {len(files) - 1} more)" if len(files) > 1 else ""
            problems.append(
                f"{files[0]}{more}: patient {pid!r} has tumour type {tumor_type_name(code)} here but "
                f"{tumor_type_name(first_type)} in {first_files[0]}"
            )
    return problems
