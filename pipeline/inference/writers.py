"""MONAI image writers that write atomically: a mask file is either complete or absent, never half-written.

MONAI's writers choose the file format from the file name (``nib.save``, ``PIL.Image.save``); the temporary
file of ``pipeline.atomic.atomic_path`` keeps the final name as its ending, is fsynced and renamed over the final
name, and removed if writing fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.data import ImageWriter, NibabelWriter, PILWriter

from pipeline.atomic import atomic_path


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` (NIfTI) writing atomically."""

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        """Write the NIfTI file ``filename`` through a temporary file."""
        with atomic_path(Path(filename)) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)


class AtomicPILWriter(PILWriter):
    """MONAI's ``PILWriter`` (PNG, JPEG, ...) writing atomically."""

    def write(self, filename: str | os.PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Write the image file ``filename`` through a temporary file."""
        with atomic_path(Path(filename)) as tmp:
            super().write(tmp, verbose=verbose, **kwargs)


def atomic_writer(output_ext: str) -> type[ImageWriter]:
    """The atomic writer class for ``output_ext`` (``.nii``/``.nii.gz`` or a Pillow format such as ``.png``)."""
    ext = output_ext.lower()
    return AtomicNibabelWriter if ext in (".nii", ".nii.gz") else AtomicPILWriter
