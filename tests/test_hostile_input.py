"""Hostile and odd input to the readers: every fault ends in one clear error naming the file.

Property-based: hypothesis writes random, truncated, wrongly typed, wrongly shaped, empty and huge-dimension
files; each must be read or refused with a one-line error starting with the file's path, never another
exception, a hang or a huge allocation (sizes are checked from headers before any pixel is read).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.transforms import LoadImage
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK, save_threshold_network

from pipeline.__main__ import main
from pipeline.atomic import TEMPORARY_NAME
from pipeline.data.figshare import (
    MAX_SIDE,
    USER_BLOCK_SIZE,
    FigshareFormatError,
    FigshareMatReader,
    _mat73_user_block,
    read_figshare_slice,
    write_figshare_slice,
)
from pipeline.data.sources import LayoutKind, SliceRecord
from pipeline.data.validation import inspect_slices

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _assert_refused_naming(path: Path, read) -> None:
    with pytest.raises(FigshareFormatError) as caught:
        read(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message, message


def _read_through_monai(path: Path):
    return FigshareMatReader(field="image").read(path)


def _valid_slice_bytes(tmp_path: Path) -> bytes:
    image = np.arange(16 * 12, dtype=np.int16).reshape(16, 12)
    mask = np.zeros((16, 12), dtype=np.uint8)
    mask[4:8, 3:6] = 1
    write_figshare_slice(tmp_path / "valid.mat", image, mask, 2, "P1")
    return (tmp_path / "valid.mat").read_bytes()


def _write_struct(path: Path, image: np.ndarray | None = None, **dataset_options) -> None:
    """A MATLAB v7.3 file with a well-formed cjdata except for ``image`` (given as stored, or huge and empty)."""
    with h5py.File(path, "w", userblock_size=USER_BLOCK_SIZE) as mat:
        group = mat.create_group("cjdata")
        group.create_dataset("label", data=np.array([[1.0]]))
        group.create_dataset("PID", data=np.array([[ord("7")]], dtype=np.uint16))
        if image is None:
            group.create_dataset("image", **dataset_options)
            group.create_dataset("tumorMask", **{**dataset_options, "dtype": np.uint8})
        else:
            group.create_dataset("image", data=image)
            group.create_dataset("tumorMask", data=np.zeros(image.shape, dtype=np.uint8))
    with open(path, "r+b") as handle:
        handle.write(_mat73_user_block())


@FAST
@given(content=st.binary(max_size=4096))
def test_random_bytes_are_refused_with_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "random.mat"
    path.write_bytes(content)
    _assert_refused_naming(path, read_figshare_slice)
    _assert_refused_naming(path, _read_through_monai)


def test_an_empty_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "empty.mat"
    path.touch()
    _assert_refused_naming(path, read_figshare_slice)


@FAST
@given(fraction=st.floats(min_value=0.0, max_value=0.999))
def test_a_truncated_file_is_refused_naming_the_file(tmp_path, fraction):
    content = _valid_slice_bytes(tmp_path)
    path = tmp_path / "truncated.mat"
    path.write_bytes(content[: int(len(content) * fraction)])
    _assert_refused_naming(path, read_figshare_slice)
    _assert_refused_naming(path, _read_through_monai)


@FAST
@given(start=st.floats(min_value=0.0, max_value=0.99), noise=st.binary(min_size=1, max_size=64))
def test_a_damaged_file_is_read_or_refused_naming_the_file(tmp_path, start, noise):
    content = bytearray(_valid_slice_bytes(tmp_path))
    offset = USER_BLOCK_SIZE + int((len(content) - USER_BLOCK_SIZE) * start)
    content[offset : offset + len(noise)] = noise
    path = tmp_path / "damaged.mat"
    path.write_bytes(bytes(content[: len(content)]))
    try:
        figshare_slice = read_figshare_slice(path)
    except FigshareFormatError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error), str(error)
    else:
        assert figshare_slice.image.shape == figshare_slice.mask.shape


@FAST
@given(
    dtype=st.sampled_from(
        ["i1", "u1", "i2", "u4", "i8", "f2", "f4", "f8", "c8", "?", "S4", [("a", "i2"), ("b", "f4")]]
    ),
    special=st.sampled_from([None, np.nan, np.inf]),
)
def test_an_image_of_any_dtype_is_read_or_refused_naming_the_file(tmp_path, dtype, special):
    image = np.ones((6, 5), dtype=dtype)
    if special is not None and image.dtype.kind == "f":
        image[2, 3] = special
    path = tmp_path / "dtype.mat"
    _write_struct(path, image)
    readable = (
        image.dtype.kind in "biuf" and np.isfinite(image.astype(np.float64) if image.dtype.kind == "f" else 0).all()
    )
    if readable:
        assert read_figshare_slice(path).image.shape == (5, 6)
    else:
        _assert_refused_naming(path, read_figshare_slice)


@FAST
@given(shape=st.lists(st.integers(min_value=0, max_value=5), min_size=0, max_size=4).map(tuple))
def test_an_image_of_any_shape_is_read_only_when_it_is_a_non_empty_matrix(tmp_path, shape):
    path = tmp_path / "shape.mat"
    _write_struct(path, np.ones(shape, dtype=np.int16))
    if len(shape) == 2 and 0 not in shape:
        assert read_figshare_slice(path).image.shape == shape[::-1]
    else:
        _assert_refused_naming(path, read_figshare_slice)


@pytest.mark.parametrize("shape", [(100_000, 100_000), (MAX_SIDE + 1, 4), (4, 10**9)])
def test_a_header_claiming_a_huge_image_is_refused_before_any_pixel_is_read(tmp_path, shape):
    # Chunked and never written: the file is a few kB however large the header says the image is.
    path = tmp_path / "huge.mat"
    _write_struct(path, shape=shape, dtype=np.int16, chunks=(1, 4))
    assert path.stat().st_size < 100_000
    _assert_refused_naming(path, read_figshare_slice)
    with pytest.raises(RuntimeError, match="huge.mat"):
        LoadImage(image_only=True, reader=FigshareMatReader(field="image"))(path)


def test_a_huge_patient_id_field_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "pid.mat"
    _write_struct(path, np.ones((4, 4), dtype=np.int16))
    with h5py.File(path, "r+") as mat:
        del mat["cjdata/PID"]
        mat["cjdata"].create_dataset("PID", shape=(10**8, 1), dtype=np.uint16, chunks=(1024, 1))
    _assert_refused_naming(path, read_figshare_slice)


def _png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG claiming ``width`` x ``height`` 8-bit grey pixels and holding only a few."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    )


def _pair(tmp_path: Path, image_bytes: bytes, suffix: str) -> SliceRecord:
    image, mask = tmp_path / "images" / f"1{suffix}", tmp_path / "masks" / f"1{suffix}"
    for path in (image, mask):
        path.parent.mkdir(exist_ok=True)
    image.write_bytes(image_bytes)
    mask.write_bytes(image_bytes)
    return SliceRecord("1", image, mask)


def _assert_pair_refused(record: SliceRecord, kind: LayoutKind) -> None:
    checked, problems = inspect_slices([record], kind)
    assert not checked and problems
    assert all(line.startswith((str(record.image), str(record.label))) for line in problems), problems


@FAST
@given(content=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".nii", ".nii.gz"]))
def test_prepare_refuses_random_bytes_in_a_pair_naming_the_file(tmp_path, content, suffix):
    kind = LayoutKind.IMAGE_FILES if suffix == ".png" else LayoutKind.NIFTI
    _assert_pair_refused(_pair(tmp_path, content, suffix), kind)


@FAST
@given(fraction=st.floats(min_value=0.0, max_value=0.95))
def test_prepare_refuses_a_truncated_nifti_naming_the_file(tmp_path, fraction):
    nib.save(nib.Nifti1Image(np.ones((40, 30), dtype=np.float32), np.eye(4)), tmp_path / "whole.nii")
    content = (tmp_path / "whole.nii").read_bytes()
    _assert_pair_refused(_pair(tmp_path, content[: int(len(content) * fraction)], ".nii"), LayoutKind.NIFTI)


def test_prepare_refuses_a_png_claiming_a_huge_image_naming_the_file(tmp_path):
    _assert_pair_refused(_pair(tmp_path, _png_claiming(100_000, 100_000), ".png"), LayoutKind.IMAGE_FILES)


def test_prepare_refuses_a_nifti_claiming_a_huge_image_naming_the_file(tmp_path):
    nifti = nib.Nifti1Image(np.zeros((2, 2), dtype=np.int16), np.eye(4))
    nifti.header.set_data_shape((32767, 32767))  # the most a NIfTI-1 header holds: 2 GB of int16
    content = nifti.header.binaryblock + bytes(4 + 8)
    _assert_pair_refused(_pair(tmp_path, content, ".nii"), LayoutKind.NIFTI)


def _threshold_checkpoint(ckpt_dir: Path) -> list[str]:
    """A 1x1-conv 'network' saved as ``model.pt`` and the infer arguments that use it."""
    ckpt_dir.mkdir()
    save_threshold_network(ckpt_dir / "model.pt")
    return ["--ckpt_dir", str(ckpt_dir), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]


def _write_inputs(folder: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    """Good and bad slices side by side; returns the stems of each."""
    folder.mkdir()
    Image.fromarray(np.full((40, 30), 90, dtype=np.uint8)).save(folder / "good_png.png")
    (folder / "good_mat.mat").write_bytes(_valid_slice_bytes(tmp_path))
    (folder / "random.mat").write_bytes(bytes(range(256)) * 3)
    (folder / "truncated.mat").write_bytes(_valid_slice_bytes(tmp_path)[:1500])
    (folder / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    (folder / "empty.nii.gz").touch()
    return ["good_png", "good_mat"], ["random.mat", "truncated.mat", "bomb.png", "empty.nii.gz"]


def test_batch_inference_writes_every_good_mask_lists_the_bad_files_and_exits_non_zero(tmp_path, capsys):
    good, bad = _write_inputs(tmp_path / "inputs", tmp_path)
    out = tmp_path / "out"
    arguments = ["infer", "--input", str(tmp_path / "inputs"), "--output", str(out), "--device", "cpu"]
    arguments += [*_threshold_checkpoint(tmp_path / "models"), "--num_workers", "0"]
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert f"{len(bad)} of {len(good) + len(bad)} inputs could not be segmented" in error
    listed = [line.strip() for line in error.splitlines() if line.startswith("  ")]
    assert sorted(Path(line.split(":")[0]).name for line in listed) == sorted(bad)
    assert sorted(path.name for path in out.glob("*_seg.nii.gz")) == sorted(f"{stem}_seg.nii.gz" for stem in good)
    assert not [path for path in out.rglob("*") if TEMPORARY_NAME.fullmatch(path.name)]  # no temporary file left

    assert main(arguments) == 1
    assert "already holds files; pass --overwrite" in capsys.readouterr().err
    assert main([*arguments, "--overwrite"]) == 1
    assert f"{len(bad)} of {len(good) + len(bad)} inputs" in capsys.readouterr().err
