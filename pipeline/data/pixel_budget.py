"""How many pixels a file would decode to, read from its header alone, so that a small file claiming a huge
image (a 164 KB PNG of 13000 x 13000 pixels decodes to gigabytes) is refused before it is decoded."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from pipeline.data.figshare import MAX_SIDE
from pipeline.user_errors import UserError

# The most pixels a slice may have: a square of the figshare reader's largest side.
MAX_PIXELS = MAX_SIDE * MAX_SIDE
# The most voxels a scan (a 3D volume, a multi-frame DICOM instance) may have: 1024^3, 4 GiB as float32.
MAX_VOXELS = 1024**3
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class OversizedImageError(ValueError):
    """A file whose header declares more pixels than a slice may have."""


def declared_pixels(path: str | Path) -> int | None:
    """The pixel count the header of the PNG/JPEG/TIFF or NIfTI file ``path`` declares; None for other files
    (their own readers check them: the figshare ``.mat`` reader caps each side at ``MAX_SIDE``)."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return math.prod(int(side) for side in nib.load(path).header.get_data_shape())
    if name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
        with Image.open(path) as image:  # reads the header only
            return image.width * image.height * len(image.getbands())
    return None


class OversizedScanError(OversizedImageError, UserError):
    """A scan whose header declares slices or a volume larger than a scan may have; its message names no file,
    the caller says which scan it is."""


def refuse_oversized_scan(shape: Sequence[int], slice_axis: int) -> None:
    """Raise ``OversizedScanError`` when a scan of ``shape`` (read from its header) has slices of more than
    ``MAX_PIXELS`` pixels (cut along ``slice_axis``) or more than ``MAX_VOXELS`` voxels in all, so that it is
    refused before its pixels are decoded."""
    in_plane = math.prod(int(side) for index, side in enumerate(shape) if index != slice_axis)
    if in_plane > MAX_PIXELS:
        raise OversizedScanError(
            f"declares slices of {in_plane} pixels, more than the {MAX_PIXELS} a slice may have; not decoded"
        )
    if (total := math.prod(int(side) for side in shape)) > MAX_VOXELS:
        raise OversizedScanError(f"declares {total} voxels, more than the {MAX_VOXELS} a scan may have; not decoded")


class RefuseOversizedd(MapTransform):
    """Raise ``OversizedImageError`` naming the file and its declared size when the header of the file at each of
    ``keys`` declares more than ``max_pixels`` pixels; pass the data on unchanged otherwise. Place it before the
    loader.

    Args:
        keys: the keys holding file paths.
        max_pixels: the largest pixel count allowed.
        allow_missing_keys: don't raise for a missing key.
    """

    def __init__(self, keys: KeysCollection, max_pixels: int = MAX_PIXELS, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_pixels = max_pixels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            count = declared_pixels(d[key]) if isinstance(d[key], (str, Path)) else None
            if count is not None and count > self.max_pixels:
                raise OversizedImageError(
                    f"{d[key]}: declares {count} pixels, more than the {self.max_pixels} a slice may have; not decoded"
                )
        return d
