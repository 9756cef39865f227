"""Write 2D slices as NIfTI files that load through MONAI exactly as their source files do."""

import gzip
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.atomic import atomic_path
from pipeline.data.sources import SliceRecord

NIFTI_IMAGE_DIR = Path("nifti", "images")
NIFTI_LABEL_DIR = Path("nifti", "labels")


def save_nifti(array: np.ndarray, path: Path, affine: np.ndarray | None = None, header=None) -> None:
    """Save ``array`` as a gzipped NIfTI-1 file at ``path`` atomically (identity affine unless one is given)."""
    image = nib.Nifti1Image(array, np.eye(4) if affine is None else affine, header)
    image.set_data_dtype(array.dtype)
    with atomic_path(path) as temporary:
        # mtime=0 keeps the bytes identical across runs for the same slice.
        temporary.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def convert_slices(
    records: Sequence[SliceRecord],
    dataset_dir: Path,
    read_pair: Callable[[SliceRecord], tuple[np.ndarray, np.ndarray]],
) -> list[SliceRecord]:
    """Write every slice as ``nifti/images/<id>.nii.gz`` + ``nifti/labels/<id>.nii.gz``; return the new records.

    ``read_pair`` gives a slice's image and mask in display orientation, shape (rows, cols). The NIfTI arrays
    are stored transposed, (cols, rows): MONAI's ``NibabelReader`` hands the stored array over as it is, and
    ``PILReader`` / ``FigshareMatReader`` return (cols, rows) for the same slice, so all three load equal.
    The image keeps its dtype and values; the label is written as uint8 0/1.
    """
    converted = []
    for record in records:
        image, mask = read_pair(record)
        image_path = dataset_dir / NIFTI_IMAGE_DIR / f"{record.slice_id}.nii.gz"
        label_path = dataset_dir / NIFTI_LABEL_DIR / f"{record.slice_id}.nii.gz"
        save_nifti(np.ascontiguousarray(image.T), image_path)
        save_nifti(np.ascontiguousarray((mask > 0).T.astype(np.uint8)), label_path)
        converted.append(replace(record, image=image_path, label=label_path))
    return converted
