"""MONAI image writers that write atomically: a mask file is either complete or absent, never half-written.

MONAI's writers choose the file format from the file name (``nib.save``, ``PIL.Image.save``), so the temporary
file keeps the final name as its ending: ``.<random>~1_seg.nii.gz`` beside ``1_seg.nii.gz``. It is fsynced
and renamed over the final name, and removed if writing fails.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monai.data import ImageWriter, NibabelWriter, PILWriter


@contextmanager
def _temporary_twin(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` ending in ``path``'s name; rename it over ``path`` on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".", suffix=f"~{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` (NIfTI) writing atomically."""

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        """Write the NIfTI file ``filename`` through a temporary twin."""
        with _temporary_twin(Path(filename)) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)


class AtomicPILWriter(PILWriter):
    """MONAI's ``PILWriter`` (PNG, JPEG, ...) writing atomically."""

    def write(self, filename: str | os.PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Write the image file ``filename`` through a temporary twin."""
        with _temporary_twin(Path(filename)) as tmp:
            super().write(tmp, verbose=verbose, **kwargs)


def atomic_writer(output_ext: str) -> type[ImageWriter]:
    """The atomic writer class for ``output_ext`` (``.nii``/``.nii.gz`` or a Pillow format such as ``.png``)."""
    ext = output_ext.lower()
    return AtomicNibabelWriter if ext in (".nii", ".nii.gz") else AtomicPILWriter
