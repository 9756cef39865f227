"""The figshare MATLAB v7.3 format: layout, orientation against MONAI's PNG reader, and refusal of bad files."""

import csv
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from monai.data import PILReader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image
from scipy.io.matlab import matfile_version

from pipeline.data.figshare import (
    FigshareFormatError,
    FigshareMatReader,
    read_cvind,
    read_figshare_slice,
    write_cvind,
    write_figshare_slice,
)
from pipeline.phantoms.slices import make_phantom_slice

MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Apr 03 10:00:00 2017 HDF5 schema 1.00 ."

# An asymmetric 5x7 pattern in MATLAB's display orientation (row 1 at the top): any flip or
# transpose changes it. Values stay within 0..255 so a PNG holds them exactly.
PATTERN = (np.arange(35).reshape(5, 7) * 7 % 256).astype(np.int16)
PATTERN_MASK = np.zeros((5, 7), dtype=np.uint8)
PATTERN_MASK[0, :3] = 1
PATTERN_MASK[1:4, 0] = 1


def matlab_fields(image=PATTERN, mask=PATTERN_MASK, label=2.0, pid="MR048294") -> dict:
    """The cjdata fields as MATLAB holds them: name -> (array in MATLAB orientation, MATLAB class)."""
    return {
        "label": (np.array([[label]], dtype=np.float64), "double"),
        "PID": (np.array([[ord(char) for char in pid]], dtype=np.uint16), "char"),
        "image": (image, "int16"),
        "tumorBorder": (np.array([[1.0, 1.0, 3.0, 1.0, 1.0, 4.0]]), "double"),
        "tumorMask": (mask, "logical"),
    }


def write_like_matlab(path: Path, fields: dict, group: str = "cjdata") -> Path:
    """Build a file the way MATLAB's save -v7.3 does, by hand: HDF5 behind the 512-byte header."""
    with h5py.File(path, "w", userblock_size=512) as mat:
        struct = mat.create_group(group)
        struct.attrs["MATLAB_class"] = np.bytes_("struct")
        for name, (values, matlab_class) in fields.items():
            # Column-major storage: HDF5 sees the transpose of the MATLAB array.
            node = struct.create_dataset(name, data=np.asarray(values).T)
            node.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    with open(path, "r+b") as handle:
        handle.write(MATLAB_HEADER.ljust(116, b" ") + bytes(8) + b"\x00\x02IM")
    return path


def save_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def load_pair(image_path: Path, label_path: Path) -> dict:
    """The bundle's loading step: one LoadImaged per key, each with the figshare reader for its field."""
    transform = Compose(
        [
            LoadImaged(keys="image", reader=FigshareMatReader(field="image")),
            LoadImaged(keys="label", reader=FigshareMatReader(field="tumorMask")),
            EnsureChannelFirstd(keys=["image", "label"]),
        ]
    )
    return transform({"image": str(image_path), "label": str(label_path)})


def test_written_slice_reads_back_identically(tmp_path):
    image, mask = make_phantom_slice(np.random.default_rng(3), tumor_type=3, size=128)
    border = np.array([[60.5, 70.0], [61.0, 69.5], [62.0, 70.5]])
    path = tmp_path / "7.mat"
    write_figshare_slice(path, image, mask, tumor_type=3, pid="100360", border=border)
    loaded = read_figshare_slice(path)
    assert loaded.image.dtype == np.int16 and np.array_equal(loaded.image, image)
    assert loaded.mask.dtype == np.uint8 and np.array_equal(loaded.mask, mask)
    assert (loaded.tumor_type, loaded.pid) == (3, "100360")
    assert np.array_equal(loaded.border, border)


def test_written_file_has_the_matlab_v73_layout(tmp_path):
    image = PATTERN
    path = tmp_path / "1.mat"
    write_figshare_slice(path, image, PATTERN_MASK, tumor_type=1, pid="MR048294")
    header = path.read_bytes()[:512]
    assert header.startswith(b"MATLAB 7.3 MAT-file, Platform: ")
    assert b"HDF5 schema 1.00 ." in header[:116]
    assert header[116:124] == bytes(8) and header[124:128] == b"\x00\x02IM" and header[128:] == bytes(384)
    assert matfile_version(path) == (2, 0)
    with h5py.File(path, "r") as mat:
        struct = mat["cjdata"]
        assert struct.attrs["MATLAB_class"] == b"struct"
        fields = [b"".join(name).decode() for name in struct.attrs["MATLAB_fields"]]
        assert fields == ["label", "PID", "image", "tumorBorder", "tumorMask"]
        assert struct["image"].shape == (7, 5) and struct["image"].dtype == np.int16
        assert np.array_equal(struct["image"][()], image.T)
        assert struct["image"].attrs["MATLAB_class"] == b"int16"
        assert struct["tumorMask"].shape == (7, 5) and struct["tumorMask"].dtype == np.uint8
        assert struct["tumorMask"].attrs["MATLAB_class"] == b"logical"
        assert struct["tumorMask"].attrs["MATLAB_int_decode"] == 1
        assert struct["label"].shape == (1, 1) and struct["label"].dtype == np.float64
        assert struct["PID"].shape == (8, 1) and struct["PID"].dtype == np.uint16
        assert struct["PID"].attrs["MATLAB_class"] == b"char" and struct["PID"].attrs["MATLAB_int_decode"] == 2
        border = struct["tumorBorder"]
        assert border.dtype == np.float64 and border.shape[1] == 1 and border.shape[0] % 2 == 0


def test_border_is_traced_from_the_mask_in_matlab_pixel_coordinates(tmp_path):
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[10:20, 30:50] = 1  # rows 11..20 and columns 31..50 in MATLAB's 1-based indexing
    path = tmp_path / "1.mat"
    write_figshare_slice(path, np.zeros((40, 60)), mask, tumor_type=1, pid="1")
    border = read_figshare_slice(path).border
    x, y = border[:, 0], border[:, 1]
    assert (x.min(), x.max()) == (30.5, 50.5)
    assert (y.min(), y.max()) == (10.5, 20.5)


def test_matlab_written_pattern_reads_the_right_way_up(tmp_path):
    path = write_like_matlab(tmp_path / "1.mat", matlab_fields())
    loaded = read_figshare_slice(path)
    assert np.array_equal(loaded.image, PATTERN)
    assert np.array_equal(loaded.mask, PATTERN_MASK)
    assert (loaded.pid, loaded.tumor_type) == ("MR048294", 2)
    assert np.array_equal(loaded.border, [[1.0, 1.0], [3.0, 1.0], [1.0, 4.0]])


def test_reader_gives_what_pil_reader_gives_for_the_same_slice_as_png(tmp_path):
    mat = write_like_matlab(tmp_path / "1.mat", matlab_fields())
    png = save_png(tmp_path / "1.png", PATTERN)
    reader, pil = FigshareMatReader(field="image"), PILReader()
    mat_array, mat_meta = reader.get_data(reader.read(mat))
    png_array, png_meta = pil.get_data(pil.read(png))
    assert mat_array.shape == png_array.shape == (7, 5)
    assert np.array_equal(mat_array, png_array)
    assert np.array_equal(mat_meta["spatial_shape"], png_meta["spatial_shape"])
    with h5py.File(mat, "r") as raw:
        assert np.array_equal(mat_array, raw["cjdata/image"][()])  # the stored layout, handed over as it is


def test_load_imaged_reads_mat_and_falls_back_to_png_and_nifti_identically(tmp_path):
    mat = write_like_matlab(tmp_path / "1.mat", matlab_fields())
    png_image, png_mask = save_png(tmp_path / "1.png", PATTERN), save_png(tmp_path / "1_mask.png", PATTERN_MASK)
    # NIfTI holds the array in the (column, row) layout MONAI's readers produce for 2D images.
    nifti_image, nifti_mask = tmp_path / "1.nii.gz", tmp_path / "1_mask.nii.gz"
    nib.save(nib.Nifti1Image(PATTERN.T.astype(np.float32), np.eye(4)), nifti_image)
    nib.save(nib.Nifti1Image(PATTERN_MASK.T.astype(np.uint8), np.eye(4)), nifti_mask)
    from_mat = load_pair(mat, mat)
    for image_path, label_path in ((png_image, png_mask), (nifti_image, nifti_mask)):
        other = load_pair(image_path, label_path)
        for key in ("image", "label"):
            assert other[key].shape == from_mat[key].shape == (1, 7, 5)
            assert np.array_equal(other[key].numpy(), from_mat[key].numpy())
    assert from_mat["image"].meta["pid"] == "MR048294"
    assert from_mat["label"].meta["tumor_type"] == 2
    assert from_mat["label"].meta["tumor_type_name"] == "glioma"
    assert tuple(from_mat["image"].meta["original_shape"]) == (5, 7)
    assert np.array_equal(from_mat["image"].affine.numpy(), np.eye(4))


def test_load_imaged_passes_on_the_figshare_fault_of_a_bad_file(tmp_path):
    path = write_like_matlab(tmp_path / "1.mat", matlab_fields(mask=PATTERN_MASK * 3))
    loader = LoadImaged(keys="label", reader=FigshareMatReader(field="tumorMask"))
    with pytest.raises(RuntimeError, match=re.escape(f"{path}: tumorMask is not binary")):
        loader({"label": str(path)})


def test_real_slices_load_the_same_from_png_and_from_mat(tmp_path, figshare_sample):
    rows = list(csv.DictReader((figshare_sample / "meta.csv").open()))
    picked = [
        rows[0],
        next(row for row in rows if Image.open(figshare_sample / "images" / f"{row['index']}.png").width == 256),
    ]
    for row in picked:
        png_image = figshare_sample / "images" / f"{row['index']}.png"
        png_mask = figshare_sample / "masks" / f"{row['index']}.png"
        mat = tmp_path / f"{row['index']}.mat"
        image, mask = np.asarray(Image.open(png_image)), np.asarray(Image.open(png_mask)) // 255
        write_figshare_slice(mat, image, mask, int(row["label"]), row["pid"])
        from_png, from_mat = load_pair(png_image, png_mask), load_pair(mat, mat)
        assert np.array_equal(from_png["image"].numpy(), from_mat["image"].numpy())
        assert np.array_equal(from_png["label"].numpy() > 0, from_mat["label"].numpy() > 0)
        assert from_mat["image"].meta["pid"] == row["pid"]
        assert from_mat["label"].meta["tumor_type_name"] == row["label_name"]


def test_reader_keeps_scanner_values_and_mask_dtype(tmp_path):
    image = PATTERN.copy()
    image[0, 0], image[4, 6] = -12, 4000
    path = write_like_matlab(tmp_path / "1.mat", matlab_fields(image=image))
    image_array, _ = FigshareMatReader("image").get_data(FigshareMatReader("image").read(path))
    mask_array, _ = FigshareMatReader("tumorMask").get_data(FigshareMatReader("tumorMask").read(path))
    assert image_array.dtype == np.int16 and (image_array.min(), image_array.max()) == (-12, 4000)
    assert mask_array.dtype == np.uint8 and np.array_equal(mask_array, PATTERN_MASK.T)


def test_reader_stacks_several_files_as_channels(tmp_path):
    first = write_like_matlab(tmp_path / "1.mat", matlab_fields())
    second = write_like_matlab(tmp_path / "2.mat", matlab_fields(image=PATTERN + 1))
    reader = FigshareMatReader()
    array, meta = reader.get_data(reader.read([first, second]))
    assert array.shape == (2, 7, 5) and meta["original_channel_dim"] == 0
    assert np.array_equal(array[1], array[0] + 1)


def test_reader_accepts_only_mat_suffix_and_known_fields():
    reader = FigshareMatReader()
    assert reader.verify_suffix("data/12.mat") and not reader.verify_suffix("data/12.png")
    with pytest.raises(ValueError, match="'label' is not one of"):
        FigshareMatReader(field="label")


def assert_refused(path: Path, *fragments: str) -> None:
    with pytest.raises(FigshareFormatError) as caught:
        read_figshare_slice(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_random_bytes_are_refused_as_not_hdf5(tmp_path):
    path = tmp_path / "1.mat"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    assert_refused(path, "not an HDF5 file")


def test_png_renamed_to_mat_is_refused_as_not_hdf5(tmp_path):
    path = save_png(tmp_path / "1.png", PATTERN).rename(tmp_path / "1.mat")
    assert_refused(path, "not an HDF5 file")


def test_matlab_v5_file_is_refused_with_the_resave_hint(tmp_path):
    path = tmp_path / "1.mat"
    header = b"MATLAB 5.0 MAT-file, Platform: PCWIN64, Created on: Mon Apr 03 10:00:00 2017".ljust(116, b" ")
    path.write_bytes(header + bytes(8) + b"\x00\x01IM" + bytes(64))
    assert_refused(path, "MATLAB v5 MAT-file", "-v7.3")


def test_hdf5_without_cjdata_is_refused(tmp_path):
    path = write_like_matlab(tmp_path / "1.mat", matlab_fields(), group="data")
    assert_refused(path, "no 'cjdata'")


@pytest.mark.parametrize("field", ["image", "tumorMask", "label", "PID"])
def test_missing_field_is_refused_by_name(tmp_path, field):
    fields = matlab_fields()
    del fields[field]
    assert_refused(write_like_matlab(tmp_path / "1.mat", fields), f"no field '{field}'")


def test_mask_of_another_shape_is_refused_with_both_shapes(tmp_path):
    fields = matlab_fields(mask=np.zeros((5, 6), dtype=np.uint8))
    assert_refused(write_like_matlab(tmp_path / "1.mat", fields), "(5, 6)", "(5, 7)", "differs")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_infinite_pixels_are_refused(tmp_path, bad_value):
    image = PATTERN.astype(np.float64)
    image[2, 3] = bad_value
    fields = matlab_fields()
    fields["image"] = (image, "double")
    assert_refused(write_like_matlab(tmp_path / "1.mat", fields), "1 NaN or infinite pixels")


@pytest.mark.parametrize("label", [0.0, 4.0, 2.5])
def test_label_outside_the_tumour_types_is_refused(tmp_path, label):
    assert_refused(write_like_matlab(tmp_path / "1.mat", matlab_fields(label=label)), "label", "not a tumour type")


def test_non_binary_mask_is_refused(tmp_path):
    fields = matlab_fields(mask=PATTERN_MASK * 255)
    assert_refused(write_like_matlab(tmp_path / "1.mat", fields), "tumorMask is not binary", "255")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="2.mat"):
        read_figshare_slice(tmp_path / "2.mat")


@pytest.mark.parametrize(
    ("image", "mask", "tumor_type", "fault"),
    [
        (PATTERN, PATTERN_MASK[:, :6], 1, "equal 2D shapes"),
        (PATTERN, PATTERN_MASK * 2, 1, "only 0 and 1"),
        (PATTERN, PATTERN_MASK, 4, "unknown tumour type"),
        (PATTERN + 0.5, PATTERN_MASK, 1, "whole numbers"),
        (PATTERN.astype(np.int32) * 1000, PATTERN_MASK, 1, "do not fit int16"),
    ],
)
def test_writer_refuses_unusable_input_and_leaves_no_file(tmp_path, image, mask, tumor_type, fault):
    path = tmp_path / "1.mat"
    with pytest.raises(ValueError, match=fault):
        write_figshare_slice(path, image, mask, tumor_type, pid="100360")
    assert list(tmp_path.iterdir()) == []


def test_cvind_round_trips_with_the_matlab_column_layout(tmp_path):
    path = tmp_path / "cvind.mat"
    write_cvind(path, [1, 2, 5, 3, 4, 1])
    with h5py.File(path, "r") as mat:
        assert mat["cvind"].shape == (1, 6) and mat["cvind"].dtype == np.float64
        assert mat["cvind"].attrs["MATLAB_class"] == b"double"
    assert read_cvind(path).tolist() == [1, 2, 5, 3, 4, 1]
    assert matfile_version(path) == (2, 0)


def test_cvind_without_folds_or_with_bad_values_is_refused(tmp_path):
    empty = write_like_matlab(tmp_path / "a.mat", matlab_fields())
    with pytest.raises(FigshareFormatError, match=f"^{re.escape(str(empty))}: .*no field 'cvind'"):
        read_cvind(empty)
    bad = tmp_path / "b.mat"
    with h5py.File(bad, "w") as mat:
        mat["cvind"] = np.array([[1.0, 0.0, 2.5]])
    with pytest.raises(FigshareFormatError, match=f"^{re.escape(str(bad))}: cvind must hold whole fold numbers"):
        read_cvind(bad)
