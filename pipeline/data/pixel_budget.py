"""How many pixels a file would decode to, read from its header alone, so that a small file claiming a huge
image (a 164 KB PNG of 13000 x 13000 pixels decodes to gigabytes) is refused before it is decoded."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from pipeline.data.figshare import MAX_SIDE

# The most pixels a slice may have: a square of the figshare reader's largest side.
MAX_PIXELS = MAX_SIDE * MAX_SIDE
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
