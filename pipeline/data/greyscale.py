"""Colour, palette and alpha slices read as greyscale, as the popular figshare PNG readers read them (Pillow's
``convert("L")``, OpenCV's ``IMREAD_GRAYSCALE``): the ITU-R 601-2 luma, alpha dropped. A grey image saved as RGB
reads back exactly as it was."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pipeline.data.sources import IMAGE_FILE_SUFFIXES

# Pillow's modes of one grey channel; every other mode is read through its luma.
GREY_MODES = frozenset({"L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def as_greyscale(image: Image.Image) -> Image.Image:
    """``image`` itself when it is grey; else its luma as an 8-bit grey image (a ``converter`` of MONAI's
    ``PILReader``)."""
    return image if image.mode in GREY_MODES else image.convert("L")


def greyscale_note(path: Path) -> str:
    """How the image file at ``path`` is read when it is not grey (``read as greyscale from its RGBA pixels``), from
    its header alone; empty for a grey image, a file that is no PNG or JPEG, or one Pillow cannot open (its reader
    reports that)."""
    if not path.name.lower().endswith(IMAGE_FILE_SUFFIXES):
        return ""
    try:
        with Image.open(path) as image:
            mode = image.mode
    except Exception:  # not an image Pillow reads: the slice loader names the fault when it loads it
        return ""
    return "" if mode in GREY_MODES else f"read as greyscale from its {mode} pixels (ITU-R 601-2 luma, alpha dropped)"
