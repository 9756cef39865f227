"""The figshare brain tumour dataset's MATLAB v7.3 MAT-files: read, write, and load through MONAI.

A MATLAB v7.3 MAT-file is an HDF5 file behind a 512-byte user block. MATLAB stores arrays
column-major and HDF5 lists dimensions slowest first, so an m-by-n MATLAB array is an HDF5
dataset of shape (n, m): the 512x512 ``cjdata.image`` is a (cols, rows) dataset, the 1x1 double
``cjdata.label`` a (1, 1) one, the 1xk char row vector ``cjdata.PID`` a (k, 1) uint16 one, the
1x2k ``cjdata.tumorBorder`` a (2k, 1) one and the 3064x1 ``cvind`` a (1, 3064) one. docs/data.md
gives the full layout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import contourpy
import h5py
import numpy as np
from monai.data import ImageReader
from monai.data.utils import is_supported_format
from monai.utils import MetaKeys, ensure_tuple

from pipeline.atomic import atomic_path
from pipeline.data.tumor_types import TUMOR_TYPES, tumor_type_name
from pipeline.user_errors import UserError

PathLike = str | os.PathLike

USER_BLOCK_SIZE = 512
MAT73_TEXT = "MATLAB 7.3 MAT-file"
MAT5_TEXT = b"MATLAB 5.0 MAT-file"
# The fields of cjdata in the order MATLAB lists them for the original files.
STRUCT_FIELDS = ("label", "PID", "image", "tumorBorder", "tumorMask")
REQUIRED_FIELDS = ("image", "tumorMask", "label", "PID")
ARRAY_FIELDS = ("image", "tumorMask")
# The largest slice side read: MR slices are at most a few thousand pixels across, and a header claiming more
# (100000 x 100000 would need 20 GB) is refused before any pixel is read.
MAX_SIDE = 8192
# The most values read from any other field (labels, patient ids, outlines, fold lists).
MAX_FIELD_VALUES = 1_000_000
# MATLAB's own names for the platform that wrote a file (the header's "Platform:").
MATLAB_PLATFORMS = {"linux": "GLNXA64", "win32": "PCWIN64", "darwin": "MACI64"}


class FigshareFormatError(UserError, ValueError):
    """A file that is not a well-formed figshare MAT-file; the message starts with the file's path."""


@dataclass(frozen=True)
class FigshareSlice:
    """One figshare slice, arrays in MATLAB's display orientation (row 1 at the top, shape (rows, cols)).

    Args:
        image: the scanner intensities, dtype as stored (int16 in the originals), not rescaled.
        mask: the tumour mask, uint8 0/1, same shape as ``image``.
        tumor_type: 1 meningioma, 2 glioma, 3 pituitary.
        pid: the patient id, a string (``"100360"``, ``"MR048294"``).
        border: the outline as stored, shape (k, 2), one ``(x, y)`` MATLAB pixel coordinate per row
            (x the column, y the row, 1-based); empty (0, 2) when the file holds none.
    """

    image: np.ndarray
    mask: np.ndarray
    tumor_type: int
    pid: str
    border: np.ndarray


def _open_mat73(path: PathLike, **h5py_kwargs) -> h5py.File:
    """Open ``path`` as HDF5, refusing MATLAB v5 and non-HDF5 files with a message that says which."""
    with open(path, "rb") as handle:
        head = handle.read(len(MAT5_TEXT))
    if head == MAT5_TEXT:
        raise FigshareFormatError(
            f"{path}: is a MATLAB v5 MAT-file, not v7.3: re-save it in MATLAB with save(..., '-v7.3')"
        )
    try:
        return h5py.File(path, "r", **h5py_kwargs)
    except OSError:
        raise FigshareFormatError(f"{path}: is not a MATLAB v7.3 MAT-file (not an HDF5 file)") from None


@contextmanager
def _damage_reported(path: PathLike) -> Iterator[None]:
    """Turn HDF5's errors on a damaged file (bad offsets, broken chunks, dangling links) into one clear line."""
    try:
        yield
    except FigshareFormatError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError, ValueError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FigshareFormatError(f"{path}: is damaged and cannot be read ({detail})") from None


def _dataset(group: h5py.Group, name: str, path: PathLike, where: str) -> h5py.Dataset:
    if name not in group:
        found = ", ".join(sorted(group)) or "nothing"
        raise FigshareFormatError(f"{path}: {where} has no field '{name}' (found: {found})")
    node = group[name]
    if not isinstance(node, h5py.Dataset):
        raise FigshareFormatError(f"{path}: {where}/{name} is a {type(node).__name__}, expected an array")
    return node


def _is_matlab_empty(node: h5py.Dataset) -> bool:
    # MATLAB writes an empty array as a small uint64 array of its dimensions, flagged MATLAB_empty.
    return bool(node.attrs.get("MATLAB_empty", 0))


def _numeric(node: h5py.Dataset, path: PathLike) -> np.ndarray:
    if node.size > MAX_FIELD_VALUES:
        raise FigshareFormatError(
            f"{path}: {node.name} has shape {node.shape}, more than the {MAX_FIELD_VALUES} values such a field holds"
        )
    values = np.asarray(node[()])
    if values.dtype.kind not in "biuf":
        raise FigshareFormatError(f"{path}: {node.name} holds {node.dtype}, expected numbers")
    return values


def _check_matrix(node: h5py.Dataset, path: PathLike) -> None:
    """Refuse a dataset that is not a non-empty numeric 2D array, from its header alone (no data read)."""
    if node.dtype.kind not in "biuf":
        raise FigshareFormatError(f"{path}: {node.name} holds {node.dtype}, expected numbers")
    if len(node.shape) != 2 or 0 in node.shape:
        raise FigshareFormatError(f"{path}: {node.name} has shape {node.shape}, expected a 2D array")
    if max(node.shape) > MAX_SIDE:
        raise FigshareFormatError(
            f"{path}: {node.name} has shape {node.shape}, larger than the {MAX_SIDE} x {MAX_SIDE} limit of a slice"
        )


def _is_binary(values: np.ndarray) -> bool:
    """Whether every value is 0 or 1; integer arrays need only their extremes checked."""
    if values.dtype.kind in "biu":
        return values.size == 0 or (values.min() >= 0 and values.max() <= 1)
    return bool(np.isin(values, (0, 1)).all())


def _read_label(node: h5py.Dataset, path: PathLike) -> int:
    values = _numeric(node, path).ravel()
    value = values[0] if values.size == 1 else None
    if value is None or not np.isfinite(value) or value not in TUMOR_TYPES:
        known = ", ".join(f"{code} {name}" for code, name in TUMOR_TYPES.items())
        raise FigshareFormatError(f"{path}: label {values.tolist()} is not a tumour type (expected one of {known})")
    return int(value)


def _read_pid(node: h5py.Dataset, path: PathLike) -> str:
    if _is_matlab_empty(node):
        return ""
    codes = _numeric(node, path)
    if codes.dtype.kind not in "iu":
        raise FigshareFormatError(f"{path}: PID holds {codes.dtype}, expected uint16 character codes")
    return "".join(map(chr, codes.ravel()))


def _read_border(group: h5py.Group, path: PathLike) -> np.ndarray:
    if "tumorBorder" not in group or _is_matlab_empty(group["tumorBorder"]):
        return np.empty((0, 2))
    values = _numeric(_dataset(group, "tumorBorder", path, "/cjdata"), path).astype(np.float64).ravel()
    if values.size % 2:
        raise FigshareFormatError(f"{path}: tumorBorder holds {values.size} values, expected (x, y) pairs")
    return values.reshape(-1, 2)


@dataclass(frozen=True)
class _StoredSlice:
    """A checked slice file with some of its arrays loaded, in the stored HDF5 layout (cols, rows)."""

    arrays: dict[str, np.ndarray]
    tumor_type: int
    pid: str
    border: np.ndarray
    shape: tuple[int, int]


def _read_stored(path: PathLike, arrays: Sequence[str], **h5py_kwargs) -> _StoredSlice:
    """Check the whole ``cjdata`` struct of ``path`` but load and check only the named arrays' pixels.

    Loading one array per call lets the image and the mask transforms each decompress only what
    they return, while every check on what they return still runs.
    """
    with _open_mat73(path, **h5py_kwargs) as mat, _damage_reported(path):
        if not isinstance(mat.get("cjdata"), h5py.Group):
            raise FigshareFormatError(f"{path}: has no 'cjdata' struct, so it is not a figshare slice file")
        group = mat["cjdata"]
        fields = {name: _dataset(group, name, path, "/cjdata") for name in REQUIRED_FIELDS}
        for name in ARRAY_FIELDS:
            _check_matrix(fields[name], path)
        # HDF5 shapes are MATLAB's reversed; messages speak MATLAB's (rows, cols).
        shape, mask_shape = fields["image"].shape[::-1], fields["tumorMask"].shape[::-1]
        if mask_shape != shape:
            raise FigshareFormatError(f"{path}: tumorMask shape {mask_shape} differs from image shape {shape}")
        tumor_type = _read_label(fields["label"], path)
        pid = _read_pid(fields["PID"], path)
        border = _read_border(group, path)
        loaded = {name: fields[name][()] for name in arrays}
    image = loaded.get("image")
    if image is not None and image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int(np.count_nonzero(~np.isfinite(image)))
        raise FigshareFormatError(f"{path}: image holds {bad} NaN or infinite pixels")
    if "tumorMask" in loaded:
        mask = loaded["tumorMask"]
        if not _is_binary(mask):
            values = np.unique(mask)[:6].tolist()
            raise FigshareFormatError(f"{path}: tumorMask is not binary (values include {values}), expected 0/1")
        loaded["tumorMask"] = mask.astype(np.uint8, copy=False)
    return _StoredSlice(loaded, tumor_type, pid, border, shape)


def read_figshare_slice(path: PathLike, **h5py_kwargs) -> FigshareSlice:
    """Read and check one figshare slice file (``N.mat``); arrays come out in MATLAB's display orientation.

    Raises ``FigshareFormatError`` (one line, starting with ``path``) for a file that is not HDF5, a
    MATLAB v5 MAT-file, a file without ``/cjdata`` or one of its fields, a mask whose shape differs
    from the image's, NaN/infinite pixels, a label other than 1/2/3, a mask with values other
    than 0/1, a side above ``MAX_SIDE`` (checked from the header) or damaged HDF5 content.
    Extra keyword arguments go to ``h5py.File``.
    """
    stored = _read_stored(path, ARRAY_FIELDS, **h5py_kwargs)
    # .T turns MATLAB's column-major storage, (cols, rows) in HDF5, into display orientation.
    return FigshareSlice(
        image=stored.arrays["image"].T,
        mask=stored.arrays["tumorMask"].T,
        tumor_type=stored.tumor_type,
        pid=stored.pid,
        border=stored.border,
    )


def stored_image_shape(path: PathLike) -> tuple[int, ...]:
    """The shape of the slice in ``path`` as the reader hands it to MONAI (columns, rows), from the HDF5 header
    alone."""
    with _open_mat73(path) as mat, _damage_reported(path):
        if not isinstance(mat.get("cjdata"), h5py.Group):
            raise FigshareFormatError(f"{path}: has no 'cjdata' struct, so it is not a figshare slice file")
        return tuple(_dataset(mat["cjdata"], "image", path, "/cjdata").shape)


def _mat73_user_block() -> bytes:
    """The 512-byte user block MATLAB puts in front of the HDF5 data of a v7.3 MAT-file."""
    platform = MATLAB_PLATFORMS.get(sys.platform, "GLNXA64")
    created = datetime.now().strftime("%a %b %d %H:%M:%S %Y")
    text = f"{MAT73_TEXT}, Platform: {platform}, Created on: {created} HDF5 schema 1.00 ."
    # 116 bytes of text, 8 bytes of subsystem offset, version 0x0200 and the 'IM' little-endian mark.
    header = text.encode("ascii").ljust(116, b" ") + bytes(8) + b"\x00\x02IM"
    return header.ljust(USER_BLOCK_SIZE, b"\x00")


def _write_matlab_array(
    parent: h5py.Group, name: str, values: np.ndarray, matlab_class: str, compress: bool = False
) -> None:
    """Store a MATLAB 2D array (given in MATLAB orientation) the way MATLAB does: transposed, class-tagged."""
    if values.size == 0:
        node = parent.create_dataset(name, data=np.asarray(values.shape, dtype=np.uint64))
        node.attrs["MATLAB_empty"] = np.uint8(1)
    else:
        # One deflated chunk per array: as small as MATLAB's files and the fastest to read back whole.
        options = {"chunks": values.T.shape, "compression": "gzip", "compression_opts": 3} if compress else {}
        node = parent.create_dataset(name, data=np.ascontiguousarray(values.T), **options)
    node.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    if matlab_class == "logical":
        node.attrs["MATLAB_int_decode"] = np.int32(1)
    elif matlab_class == "char":
        node.attrs["MATLAB_int_decode"] = np.int32(2)


def _trace_border(mask: np.ndarray) -> np.ndarray:
    """The longest outline of ``mask`` as (x, y) MATLAB pixel coordinates (1-based), shape (k, 2)."""
    if not mask.any():
        return np.empty((0, 2))
    lines = contourpy.contour_generator(z=mask.astype(np.float64)).lines(0.5)
    outline = max(lines, key=len)
    if len(outline) > 1 and np.array_equal(outline[0], outline[-1]):
        outline = outline[:-1]
    return outline + 1.0


def _as_int16_image(image: np.ndarray, path: PathLike) -> np.ndarray:
    whole = image.dtype.kind in "biu" or (
        image.dtype.kind == "f" and np.isfinite(image).all() and np.array_equal(image, np.round(image))
    )
    if not whole:
        raise ValueError(f"cannot write {path}: image must hold finite whole numbers (it is stored as int16)")
    info = np.iinfo(np.int16)
    if image.size and (image.min() < info.min or image.max() > info.max):
        raise ValueError(f"cannot write {path}: image values {image.min()}..{image.max()} do not fit int16")
    return image.astype(np.int16)


def write_figshare_slice(
    path: PathLike,
    image: np.ndarray,
    mask: np.ndarray,
    tumor_type: int,
    pid: str,
    border: np.ndarray | None = None,
) -> None:
    """Write one slice as a MATLAB v7.3 MAT-file laid out exactly like the figshare originals, atomically.

    ``image`` (whole numbers fitting int16) and ``mask`` (0/1) are given in display orientation,
    shape (rows, cols). ``border`` is a (k, 2) array of (x, y) MATLAB pixel coordinates; when
    omitted it is traced from the mask. Raises ``ValueError`` naming ``path`` for unusable input.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim != 2 or mask.shape != image.shape:
        raise ValueError(f"cannot write {path}: image {image.shape} and mask {mask.shape} must be equal 2D shapes")
    if not _is_binary(mask):
        raise ValueError(f"cannot write {path}: mask must hold only 0 and 1")
    tumor_type_name(tumor_type)
    if not pid or max(map(ord, pid)) > np.iinfo(np.uint16).max:
        raise ValueError(f"cannot write {path}: patient id {pid!r} must be a non-empty string of UTF-16 code units")
    image16 = _as_int16_image(image, path)
    outline = _trace_border(mask) if border is None else np.asarray(border, dtype=np.float64).reshape(-1, 2)
    arrays = {
        "label": (np.array([[float(tumor_type)]]), "double", False),
        "PID": (np.array([[ord(char) for char in pid]], dtype=np.uint16), "char", False),
        "image": (image16, "int16", True),
        "tumorBorder": (outline.reshape(1, -1), "double", False),
        "tumorMask": (mask.astype(np.uint8), "logical", True),
    }
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=USER_BLOCK_SIZE) as mat:
            group = mat.create_group("cjdata")
            group.attrs["MATLAB_class"] = np.bytes_("struct")
            names = np.empty(len(STRUCT_FIELDS), dtype=h5py.vlen_dtype(np.dtype("S1")))
            for index, name in enumerate(STRUCT_FIELDS):
                names[index] = np.frombuffer(name.encode("ascii"), dtype="S1")
            group.attrs["MATLAB_fields"] = names
            for name in STRUCT_FIELDS:
                values, matlab_class, compress = arrays[name]
                _write_matlab_array(group, name, values, matlab_class, compress)
        with open(tmp, "r+b") as handle:
            handle.write(_mat73_user_block())


def read_cvind(path: PathLike) -> np.ndarray:
    """Read ``cvind.mat``: the fold (1, 2, ...) of every slice as an int array, index 0 for slice ``1.mat``."""
    with _open_mat73(path) as mat, _damage_reported(path):
        node = _dataset(mat, "cvind", path, "the file")
        values = _numeric(node, path)
    if values.ndim != 2 or 1 not in values.shape or values.size == 0:
        raise FigshareFormatError(f"{path}: cvind has shape {values.shape}, expected a MATLAB vector")
    folds = values.ravel()
    if not np.isfinite(folds).all() or not np.array_equal(folds, np.round(folds)) or folds.min() < 1:
        raise FigshareFormatError(f"{path}: cvind must hold whole fold numbers from 1 up")
    return folds.astype(np.int64)


def write_cvind(path: PathLike, folds: Sequence[int] | np.ndarray) -> None:
    """Write ``cvind.mat`` as MATLAB does: the folds as a double column vector (HDF5 shape (1, n)), atomically."""
    folds = np.asarray(folds)
    if folds.ndim != 1 or folds.size == 0 or folds.dtype.kind not in "iu" or folds.min() < 1:
        raise ValueError(f"cannot write {path}: folds must be a non-empty 1D sequence of integers from 1 up")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=USER_BLOCK_SIZE) as mat:
            _write_matlab_array(mat, "cvind", folds.astype(np.float64).reshape(-1, 1), "double")
        with open(tmp, "r+b") as handle:
            handle.write(_mat73_user_block())


class FigshareMatReader(ImageReader):
    """MONAI ``ImageReader`` for figshare ``.mat`` slices: one instance reads one field.

    The array comes out exactly as MONAI's ``PILReader`` returns the same slice saved as a PNG in
    display orientation: ``PILReader`` swaps a PNG's axes to (cols, rows), which is also how MATLAB's
    column-major storage lays the array out in HDF5, so the stored layout is handed over as it is.
    Values are not rescaled (int16 image, uint8 0/1 mask). Each read checks the whole struct but
    decompresses and checks only its own field's pixels. The metadata carries ``pid``,
    ``tumor_type``, ``tumor_type_name`` and ``original_shape`` (MATLAB's (rows, cols)) besides
    MONAI's ``spatial_shape``, ``original_channel_dim`` (no channel) and an identity ``affine``.

    Args:
        field: ``"image"`` or ``"tumorMask"``. (The struct's own ``label`` field is the tumour type,
            found in the metadata as ``tumor_type``, so ``"label"`` is refused to avoid confusion.)
        kwargs: passed to ``h5py.File`` in ``read()``.
    """

    def __init__(self, field: str = "image", **kwargs) -> None:
        super().__init__()
        if field not in ARRAY_FIELDS:
            raise ValueError(f"FigshareMatReader: field {field!r} is not one of {list(ARRAY_FIELDS)}")
        self.field = field
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every file name ends in ``.mat``."""
        return is_supported_format(filename, ["mat"])

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> _StoredSlice | list[_StoredSlice]:
        """Check one file, or several to be stacked as channels, loading only the field's pixels.

        ``kwargs`` override the constructor's options for ``h5py.File``.
        """
        options = {**self.kwargs, **kwargs}
        slices = [_read_stored(Path(name), (self.field,), **options) for name in ensure_tuple(data)]
        return slices if len(slices) > 1 else slices[0]

    def get_data(self, img: _StoredSlice | Sequence[_StoredSlice]) -> tuple[np.ndarray, dict]:
        """Return the field's array in MONAI's (cols, rows) layout and its metadata; several slices stack on dim 0."""
        slices = ensure_tuple(img)
        # The stored HDF5 layout already is the (cols, rows) layout PILReader gives a PNG: no transpose.
        arrays = [item.arrays[self.field] for item in slices]
        if len({array.shape for array in arrays}) > 1:
            raise ValueError(f"FigshareMatReader: cannot stack slices of shapes {[a.shape for a in arrays]}")
        first = slices[0]
        meta = {
            MetaKeys.SPATIAL_SHAPE: np.asarray(arrays[0].shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if len(arrays) == 1 else 0,
            MetaKeys.AFFINE: np.eye(4),
            MetaKeys.ORIGINAL_AFFINE: np.eye(4),
            "pid": first.pid,
            "tumor_type": first.tumor_type,
            "tumor_type_name": tumor_type_name(first.tumor_type),
            "original_shape": np.asarray(first.shape),
        }
        return (arrays[0] if len(arrays) == 1 else np.stack(arrays)), meta
