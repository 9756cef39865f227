"""``prepare``: layouts, datalist, folds, NIfTI conversion and every kind of bad input."""

import csv
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io
from monai.data import NibabelReader, PILReader, load_decathlon_datalist
from monai.transforms import LoadImage
from PIL import Image

from pipeline.__main__ import main
from pipeline.data.figshare import FigshareMatReader, read_cvind, write_figshare_slice
from pipeline.data.split import SET_NAMES
from pipeline.phantoms.slices import synthesize_dataset

DATALIST = "datalist.json"


# A handful of slices is too few patients for a validation and a test set; tests of reading ask for neither.
ALL_TRAINING = ("--fractions", 1, 0, 0)


def run_prepare(*argv) -> int:
    return main(["prepare", *map(str, argv)])


def load_datalist(dataset_dir: Path) -> dict:
    return json.loads((dataset_dir / DATALIST).read_text())


def entries(datalist: dict) -> list[dict]:
    return [entry for name in SET_NAMES for entry in datalist[name]]


def patients_by_set(datalist: dict) -> dict[str, set[str]]:
    return {name: {entry["pid"] for entry in datalist[name]} for name in SET_NAMES}


def assert_patients_apart(datalist: dict) -> None:
    patients = patients_by_set(datalist)
    assert not patients["training"] & patients["validation"]
    assert not patients["training"] & patients["test"]
    assert not patients["validation"] & patients["test"]


def asymmetric(rows: int, cols: int, dtype=np.uint8) -> np.ndarray:
    """An image whose every transposition or flip is visible: a ramp with a distinct value per pixel."""
    return (np.arange(rows * cols).reshape(rows, cols) % 251).astype(dtype)


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_png_pairs(src: Path, slice_ids, rows: int = 24, cols: int = 32, mask_max: int = 255) -> None:
    """``images/<id>.png`` + ``masks/<id>.png`` pairs with a rectangle of tumour."""
    for slice_id in slice_ids:
        write_png(src / "images" / f"{slice_id}.png", asymmetric(rows, cols))
        mask = np.zeros((rows, cols), np.uint8)
        mask[4:10, 6:20] = mask_max
        write_png(src / "masks" / f"{slice_id}.png", mask)


def write_meta(path: Path, rows) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "label", "label_name", "pid", "fold"])
        names = {1: "meningioma", 2: "glioma", 3: "pituitary"}
        writer.writerows([index, label, names[label], pid, fold] for index, label, pid, fold in rows)
    return path


def write_nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


@pytest.fixture(scope="session")
def phantom_mats(tmp_path_factory) -> Path:
    """Ten phantom patients, two 128x128 slices each, with cvind.mat: read-only for the tests."""
    folder = tmp_path_factory.mktemp("phantom")
    synthesize_dataset(folder, patients=10, slices_per_patient=2, size=128, seed=0)
    return folder


def copy_mats(phantom: Path, dest: Path, count: int = 4) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for index in range(1, count + 1):
        shutil.copy(phantom / f"{index}.mat", dest / f"{index}.mat")
    return dest


# ----- real data -----


def test_sample_split_keeps_patients_apart_trains_on_every_type_and_keeps_the_256_patient(figshare_sample, tmp_path):
    out = tmp_path / "dataset"
    assert (
        run_prepare("--src", figshare_sample, "--meta", figshare_sample / "meta.csv", "--out", out, "--to-nifti") == 0
    )
    datalist = load_datalist(out)
    assert_patients_apart(datalist)
    assert {entry["tumor_type"] for entry in datalist["training"]} == {1, 2, 3}
    assert len(entries(datalist)) == 116
    small = {
        entry["slice_id"]
        for entry in entries(datalist)
        if Image.open(figshare_sample / "images" / f"{entry['slice_id']}.png").size == (256, 256)
    }
    assert small, "the sample should hold the patient with 256x256 slices"
    assert datalist["split"]["image_sizes"]["256x256"] == len(small)
    for entry in entries(datalist):
        expected = (256, 256) if entry["slice_id"] in small else (512, 512)
        assert nib.load(out / entry["image"]).shape == expected
        assert nib.load(out / entry["label"]).shape == expected


def test_sample_fold_column_reproduces_the_author_folds(figshare_sample, tmp_path):
    out = tmp_path / "dataset"
    assert (
        run_prepare("--src", figshare_sample, "--meta", figshare_sample / "meta.csv", "--out", out, "--val-fold", 4)
        == 0
    )
    with open(figshare_sample / "meta.csv") as handle:
        fold_of = {row["index"]: int(row["fold"]) for row in csv.DictReader(handle)}
    datalist = load_datalist(out)
    assert {fold_of[entry["slice_id"]] for entry in datalist["validation"]} == {4}
    assert {fold_of[entry["slice_id"]] for entry in datalist["training"]} == {1, 2, 3}
    assert datalist["test"] == []
    assert len(datalist["validation"]) == sum(fold == 4 for fold in fold_of.values())
    assert datalist["split"]["method"] == "folds"


# ----- layouts -----


def test_mat_folder_with_cvind_reproduces_the_author_folds(phantom_mats, tmp_path):
    out = tmp_path / "dataset"
    assert run_prepare("--src", phantom_mats, "--out", out, "--val-fold", 4, "--test-fold", 5) == 0
    folds = read_cvind(phantom_mats / "cvind.mat")
    datalist = load_datalist(out)
    for name, expected in (("training", {1, 2, 3}), ("validation", {4}), ("test", {5})):
        assert {int(folds[int(entry["slice_id"]) - 1]) for entry in datalist[name]} == expected
    assert len(entries(datalist)) == len(folds)
    assert_patients_apart(datalist)


def test_datalist_loads_with_monai_and_points_at_the_source_files(phantom_mats, tmp_path):
    out = tmp_path / "dataset"
    assert run_prepare("--src", phantom_mats, "--out", out) == 0
    datalist = load_datalist(out)
    assert datalist["labels"] == {"0": "background", "1": "tumour"}
    assert datalist["numTraining"] == len(datalist["training"])
    assert datalist["split"]["method"] == "patient-wise" and datalist["split"]["seed"] == 0
    first = datalist["training"][0]
    expected = Path(os.path.relpath(phantom_mats / f"{first['slice_id']}.mat", out)).as_posix()
    assert first["image"] == first["label"] == expected and expected.startswith("../")
    assert set(first) == {"image", "label", "pid", "tumor_type", "tumor_type_name", "slice_id"}
    for name in ("training", "validation"):
        loaded = load_decathlon_datalist(out / DATALIST, data_list_key=name, base_dir=out)
        assert loaded and all(Path(item["image"]).resolve().parent == phantom_mats.resolve() for item in loaded)
    assert not list(out.glob("raw")), "a .mat folder is used where it lies, not copied"


def test_prepare_is_deterministic_for_a_seed(phantom_mats, tmp_path):
    for name in ("a", "b"):
        assert run_prepare("--src", phantom_mats, "--out", tmp_path / name, "--seed", 7) == 0
    first, second = load_datalist(tmp_path / "a"), load_datalist(tmp_path / "b")
    assert all(first[name] == second[name] for name in SET_NAMES)


def test_figshare_zips_are_extracted_and_prepared(phantom_mats, tmp_path):
    src = tmp_path / "zips"
    src.mkdir()
    slices = sorted(phantom_mats.glob("[0-9]*.mat"), key=lambda path: int(path.stem))
    halves = {"brainTumorDataPublic_1-10.zip": slices[:10], "brainTumorDataPublic_11-20.zip": slices[10:]}
    for archive, members in halves.items():
        with zipfile.ZipFile(src / archive, "w") as bundle:
            for member in members:
                bundle.write(member, member.name)
    shutil.copy(phantom_mats / "cvind.mat", src / "cvind.mat")
    out = tmp_path / "dataset"
    assert run_prepare("--src", src, "--out", out, "--val-fold", 4, "--test-fold", 5) == 0
    datalist = load_datalist(out)
    assert sorted(path.name for path in (out / "raw").iterdir()) == sorted(path.name for path in slices)
    assert all(entry["image"] == f"raw/{entry['slice_id']}.mat" for entry in entries(datalist))
    folds = read_cvind(src / "cvind.mat")
    assert {int(folds[int(entry["slice_id"]) - 1]) for entry in datalist["test"]} == {5}
    stamps = {path.name: path.stat().st_mtime_ns for path in (out / "raw").iterdir()}
    assert run_prepare("--src", src, "--out", out, "--val-fold", 4, "--test-fold", 5) == 0
    assert stamps == {path.name: path.stat().st_mtime_ns for path in (out / "raw").iterdir()}, "re-extracted"


def test_png_pairs_with_meta_split_by_patient_and_keep_pid_strings(tmp_path):
    src = tmp_path / "pngs"
    write_png_pairs(src, range(1, 15))
    rows = [(index, 1 + index % 7 % 3, f"{index % 7:03d}", 1) for index in range(1, 15)]
    meta = write_meta(tmp_path / "meta.csv", rows)
    out = tmp_path / "dataset"
    assert run_prepare("--src", src, "--meta", meta, "--out", out) == 0
    datalist = load_datalist(out)
    assert_patients_apart(datalist)
    assert {entry["pid"] for entry in entries(datalist)} == {f"{n:03d}" for n in range(7)}
    assert datalist["split"]["patients_known"] is True


def test_png_pairs_without_meta_warn_loudly_once_about_a_slice_wise_split(tmp_path, capsys, caplog):
    src = tmp_path / "pngs"
    write_png_pairs(src, range(1, 11))
    out = tmp_path / "dataset"
    assert run_prepare("--src", src, "--out", out) == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    said = capsys.readouterr().err.count("leaks the patient") + sum("leaks the patient" in line for line in warnings)
    assert said == 1 and any(line.startswith("!" * 100 + "\nWARNING: ") for line in warnings)
    datalist = load_datalist(out)
    assert datalist["split"]["method"] == "slice-wise" and datalist["split"]["patients_known"] is False
    assert all(
        entry["pid"] == entry["slice_id"] and entry["tumor_type_name"] == "unknown" for entry in entries(datalist)
    )


@pytest.mark.parametrize("mask_max", [1, 255])
def test_masks_with_values_0_1_and_0_255_are_both_binary(tmp_path, mask_max):
    src = tmp_path / "pngs"
    write_png_pairs(src, range(1, 5), mask_max=mask_max)
    assert run_prepare("--src", src, "--out", tmp_path / "dataset", *ALL_TRAINING) == 0


def test_nifti_pairs_take_tumour_type_and_patient_from_meta(tmp_path):
    src = tmp_path / "nifti"
    for index, name in enumerate(["case_a", "case_b", "case_c", "case_d"]):
        write_nifti(src / "images" / f"{name}.nii.gz", asymmetric(20, 28, np.int16) + index)
        mask = np.zeros((20, 28), np.uint8)
        mask[5:9, 3:12] = 1
        write_nifti(src / "labels" / f"{name}.nii.gz", mask)
    meta = write_meta(
        tmp_path / "meta.csv",
        [("case_a", 1, "p1", 1), ("case_b", 1, "p1", 1), ("case_c", 2, "p2", 2), ("case_d", 3, "p3", 3)],
    )
    out = tmp_path / "dataset"
    assert run_prepare("--src", src, "--meta", meta, "--out", out, "--val-fold", 2, "--test-fold", 3, "--to-nifti") == 0
    datalist = load_datalist(out)
    assert [entry["slice_id"] for entry in datalist["training"]] == ["case_a", "case_b"]
    validation = datalist["validation"][0]
    assert validation["image"] == Path(os.path.relpath(src / "images" / "case_c.nii.gz", out)).as_posix()
    assert validation["label"] == "../nifti/labels/case_c.nii.gz"
    assert (validation["pid"], validation["tumor_type"], validation["tumor_type_name"]) == ("p2", 2, "glioma")
    assert not (out / "nifti").exists(), "NIfTI sources are used as they are"


# ----- NIfTI conversion -----


def test_nifti_conversion_loads_like_the_mat_and_png_readers(tmp_path):
    rows, cols = 40, 56
    mask = np.zeros((rows, cols), np.uint8)
    mask[3:11, 20:50] = 1
    mat_src = tmp_path / "mats"
    mat_src.mkdir()
    for index in (1, 2, 3):
        write_figshare_slice(
            mat_src / f"{index}.mat", asymmetric(rows, cols, np.int16) * 3 - 40, mask, index, f"P{index}"
        )
    png_src = tmp_path / "pngs"
    write_png_pairs(png_src, (1, 2, 3), rows=rows, cols=cols)

    load_nifti = LoadImage(reader=NibabelReader(), image_only=True)
    sources = {
        "mat": (
            mat_src,
            lambda slice_id: (mat_src / f"{slice_id}.mat",) * 2,
            FigshareMatReader("image"),
            FigshareMatReader("tumorMask"),
        ),
        "png": (
            png_src,
            lambda slice_id: (png_src / "images" / f"{slice_id}.png", png_src / "masks" / f"{slice_id}.png"),
            PILReader(),
            PILReader(),
        ),
    }
    for name, (src, source_files, image_reader, mask_reader) in sources.items():
        out = tmp_path / f"{name}-dataset"
        assert run_prepare("--src", src, "--out", out, "--to-nifti", *ALL_TRAINING) == 0
        datalist = load_datalist(out)
        assert datalist["split"]["nifti"] is True
        for entry in entries(datalist):
            assert entry["image"] == f"nifti/images/{entry['slice_id']}.nii.gz"
            source_image, source_mask = source_files(entry["slice_id"])
            expected_image = LoadImage(reader=image_reader, image_only=True)(source_image)
            expected_mask = LoadImage(reader=mask_reader, image_only=True)(source_mask) > 0
            converted_image = load_nifti(out / entry["image"])
            converted_mask = load_nifti(out / entry["label"])
            assert converted_image.shape == expected_image.shape == (cols, rows)
            assert np.array_equal(np.asarray(converted_image), np.asarray(expected_image))
            assert np.array_equal(np.asarray(converted_mask), np.asarray(expected_mask))
            assert set(np.unique(np.asarray(converted_mask)).tolist()) <= {0, 1}


# ----- bad input -----


def bad_not_hdf5(tmp_path, phantom):
    src = copy_mats(phantom, tmp_path / "src")
    (src / "5.mat").write_bytes(b"\x89PNG\r\n\x1a\n not a MAT-file")
    return src, src / "5.mat", "not an HDF5 file", []


def bad_v5_mat(tmp_path, phantom):
    src = copy_mats(phantom, tmp_path / "src")
    scipy.io.savemat(src / "5.mat", {"cjdata": {"image": np.zeros((4, 4), np.int16), "label": 1.0}})
    return src, src / "5.mat", "MATLAB v5 MAT-file", []


def bad_hdf5_without_cjdata(tmp_path, phantom):
    src = copy_mats(phantom, tmp_path / "src")
    with h5py.File(src / "5.mat", "w") as handle:
        handle["something"] = np.zeros(3)
    return src, src / "5.mat", "no 'cjdata'", []


def bad_missing_field(tmp_path, phantom):
    src = copy_mats(phantom, tmp_path / "src")
    with h5py.File(src / "2.mat", "r+") as handle:
        del handle["cjdata/tumorMask"]
    return src, src / "2.mat", "no field 'tumorMask'", []


def bad_mat_mask_shape(tmp_path, phantom):
    src = copy_mats(phantom, tmp_path / "src")
    with h5py.File(src / "3.mat", "r+") as handle:
        del handle["cjdata/tumorMask"]
        handle["cjdata/tumorMask"] = np.zeros((64, 128), np.uint8)
    return src, src / "3.mat", "shape", []


def bad_png_mask_shape(tmp_path, phantom):
    src = tmp_path / "src"
    write_png_pairs(src, (1, 2, 3))
    write_png(src / "masks" / "2.png", np.zeros((10, 10), np.uint8))
    return src, src / "masks" / "2.png", r"mask shape \(10, 10\) differs from image shape \(24, 32\)", []


def bad_grey_mask(tmp_path, phantom):
    src = tmp_path / "src"
    write_png_pairs(src, (1, 2, 3))
    write_png(src / "masks" / "3.png", asymmetric(24, 32))
    return src, src / "masks" / "3.png", "mask is not binary", []


def bad_nan_pixels(tmp_path, phantom):
    src = tmp_path / "src"
    for name in ("a", "b"):
        image = asymmetric(8, 8).astype(np.float32)
        image[2, 3] = np.nan if name == "b" else 0
        write_nifti(src / "images" / f"{name}.nii.gz", image)
        write_nifti(src / "labels" / f"{name}.nii.gz", np.zeros((8, 8), np.uint8))
    return src, src / "images" / "b.nii.gz", "1 NaN or infinite pixels", []


def bad_empty_folder(tmp_path, phantom):
    src = tmp_path / "src"
    src.mkdir()
    return src, src, "empty folder", []


def bad_image_without_mask(tmp_path, phantom):
    src = tmp_path / "src"
    write_png_pairs(src, (1, 2))
    write_png(src / "images" / "9.png", asymmetric(24, 32))
    return src, src / "images" / "9.png", "image without a mask", []


def bad_mask_without_image(tmp_path, phantom):
    src = tmp_path / "src"
    write_png_pairs(src, (1, 2))
    write_png(src / "masks" / "8.png", np.zeros((24, 32), np.uint8))
    return src, src / "masks" / "8.png", "mask without an image", []


def bad_duplicate_slice_id(tmp_path, phantom):
    src = tmp_path / "src"
    write_png_pairs(src, (5, 6))
    write_png(src / "images" / "05.png", asymmetric(24, 32))
    return src, src / "images" / "5.png", "duplicate slice id '5'", []


def bad_meta_patient_with_two_types(tmp_path, phantom):
    src = tmp_path / "src"
    write_png_pairs(src, (1, 2, 3))
    meta = write_meta(tmp_path / "meta.csv", [(1, 1, "100360", 1), (2, 2, "100360", 1), (3, 3, "MR048294", 2)])
    return src, meta, "patient '100360' is listed with 2 tumour types", ["--meta", meta]


def bad_mat_patient_with_two_types(tmp_path, phantom):
    src = tmp_path / "src"
    src.mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    write_figshare_slice(src / "1.mat", asymmetric(16, 16, np.int16), mask, 1, "100360")
    write_figshare_slice(src / "2.mat", asymmetric(16, 16, np.int16), mask, 1, "100360")
    write_figshare_slice(src / "3.mat", asymmetric(16, 16, np.int16), mask, 3, "100360")
    return src, src / "3.mat", "patient '100360' has tumour type pituitary here but meningioma", []


def bad_unknown_extension(tmp_path, phantom):
    src = tmp_path / "src"
    write_png_pairs(src, (1, 2))
    (src / "images" / "3.bmp").write_bytes(b"BM")
    return src, src / "images" / "3.bmp", "unknown extension '.bmp'", []


def bad_unrecognised_layout(tmp_path, phantom):
    src = tmp_path / "src"
    src.mkdir()
    (src / "scan.dcm").write_bytes(b"DICM")
    return src, src, "unrecognised layout", []


def bad_slice_missing_from_meta(tmp_path, phantom):
    src = tmp_path / "src"
    write_png_pairs(src, (1, 2, 3))
    meta = write_meta(tmp_path / "meta.csv", [(1, 1, "a", 1), (2, 1, "a", 1)])
    return src, src / "images" / "3.png", "has no row in", ["--meta", meta]


def bad_archive_path_traversal(tmp_path, phantom):
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "brainTumorDataPublic_1-2.zip", "w") as bundle:
        bundle.write(phantom / "1.mat", "1.mat")
        bundle.write(phantom / "2.mat", "../../2.mat")
    return src, src / "brainTumorDataPublic_1-2.zip", r"\.\./\.\./2\.mat: refused", []


def bad_archive_not_a_zip(tmp_path, phantom):
    src = tmp_path / "src"
    src.mkdir()
    (src / "brainTumorDataPublic_1-766.zip").write_bytes(b"truncated download")
    return src, src / "brainTumorDataPublic_1-766.zip", "not a readable zip archive", []


BAD_INPUTS = [
    bad_not_hdf5,
    bad_v5_mat,
    bad_hdf5_without_cjdata,
    bad_missing_field,
    bad_mat_mask_shape,
    bad_png_mask_shape,
    bad_grey_mask,
    bad_nan_pixels,
    bad_empty_folder,
    bad_image_without_mask,
    bad_mask_without_image,
    bad_duplicate_slice_id,
    bad_meta_patient_with_two_types,
    bad_mat_patient_with_two_types,
    bad_unknown_extension,
    bad_unrecognised_layout,
    bad_slice_missing_from_meta,
    bad_archive_path_traversal,
    bad_archive_not_a_zip,
]


@pytest.mark.parametrize("make_bad_input", BAD_INPUTS, ids=lambda make: make.__name__[4:])
def test_bad_input_is_reported_with_file_and_fault_and_no_datalist_is_written(
    make_bad_input, phantom_mats, tmp_path, capsys
):
    src, bad_path, fault, extra = make_bad_input(tmp_path, phantom_mats)
    out = tmp_path / "dataset"
    assert run_prepare("--src", src, "--out", out, *extra) == 1
    lines = [line.removeprefix("error: ") for line in capsys.readouterr().err.splitlines()]
    assert any(line.startswith(str(bad_path)) and re.search(fault, line) for line in lines), lines
    assert not (out / DATALIST).exists()


def test_every_bad_file_is_reported_at_once(phantom_mats, tmp_path, capsys):
    src = copy_mats(phantom_mats, tmp_path / "src")
    (src / "5.mat").write_bytes(b"junk")
    with h5py.File(src / "6.mat", "w") as handle:
        handle["x"] = 1
    (src / "notes.docx").write_bytes(b"")
    assert run_prepare("--src", src, "--out", tmp_path / "dataset") == 1
    err = capsys.readouterr().err
    for name in ("5.mat", "6.mat", "notes.docx"):
        assert str(src / name) in err
    assert "error: 3 problems found; the dataset was not prepared:" in err


def test_archive_path_traversal_writes_nothing_outside_the_dataset(phantom_mats, tmp_path):
    src, _, _, _ = bad_archive_path_traversal(tmp_path, phantom_mats)
    run_prepare("--src", src, "--out", tmp_path / "dataset")
    assert not (tmp_path / "2.mat").exists() and not (tmp_path.parent / "2.mat").exists()


def test_binarize_thresholds_a_grey_mask_into_a_new_file_and_leaves_the_original(tmp_path, caplog):
    src = tmp_path / "src"
    write_png_pairs(src, (1, 2, 3))
    grey = np.zeros((24, 32), np.uint8)
    grey[4:10, 6:20] = 200
    grey[5:9, 7:19] = 255  # the soft edge of a resampled mask
    Image.fromarray(grey).save(src / "masks" / "2.png")
    original = (src / "masks" / "2.png").read_bytes()
    out = tmp_path / "dataset"
    assert run_prepare("--src", src, "--out", out) == 1
    assert run_prepare("--src", src, "--out", out, "--binarize", *ALL_TRAINING) == 0
    assert (src / "masks" / "2.png").read_bytes() == original
    assert any("not binary" in record.getMessage() for record in caplog.records)
    entry = next(entry for entry in entries(load_datalist(out)) if entry["slice_id"] == "2")
    assert entry["label"] == "binarized_masks/2.png"
    binarized = np.asarray(Image.open(out / entry["label"]))
    assert set(np.unique(binarized).tolist()) == {0, 255}
    assert np.array_equal(binarized > 0, grey > 0)
    assert load_datalist(out)["split"]["binarized_masks"] == 1


def test_too_few_patients_for_the_fractions_are_refused_naming_the_empty_sets_and_the_minimum(
    phantom_mats, tmp_path, capsys
):
    src = copy_mats(phantom_mats, tmp_path / "three", count=6)  # two slices per patient: 3 patients
    out = tmp_path / "dataset"
    assert run_prepare("--src", src, "--out", out) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: 3 patients are too few for the fractions [0.8, 0.1, 0.1]: the validation and test sets would be "
        "empty; at least 7 patients are needed (or give a set you do not want a fraction of 0 with --fractions)"
    ]
    assert not (out / DATALIST).exists()
    assert run_prepare("--src", src, "--out", out, "--fractions", 0.5, 0.5, 0) == 0
    datalist = load_datalist(out)
    assert datalist["validation"] and not datalist["test"]


def test_a_validation_fold_alone_leaves_the_test_set_empty_as_asked(phantom_mats, tmp_path):
    out = tmp_path / "dataset"
    assert run_prepare("--src", phantom_mats, "--out", out, "--val-fold", 2) == 0
    datalist = load_datalist(out)
    assert datalist["training"] and datalist["validation"] and datalist["test"] == []


def test_a_named_fold_without_slices_is_refused(phantom_mats, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert run_prepare("--src", phantom_mats, "--out", out, "--val-fold", 1, "--test-fold", 6) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "test fold 6 holds no slices (folds present: [1, 2, 3, 4, 5])" in line
    assert not (out / DATALIST).exists()


def test_fold_options_without_a_fold_source_or_a_fold_choice_are_refused(tmp_path, capsys):
    src = tmp_path / "pngs"
    write_png_pairs(src, (1, 2, 3))
    assert run_prepare("--src", src, "--out", tmp_path / "a", "--val-fold", 2) == 1
    assert "no folds to choose from" in capsys.readouterr().err
    assert run_prepare("--src", src, "--out", tmp_path / "b", "--folds", "meta") == 1
    assert "without --val-fold or --test-fold" in capsys.readouterr().err
    assert not (tmp_path / "a" / DATALIST).exists() and not (tmp_path / "b" / DATALIST).exists()


def test_a_dataset_folder_that_is_one_of_the_source_folders_keeps_its_slices(phantom_mats, tmp_path):
    for index in range(1, 21):
        folder = tmp_path / "src" / ("brainTumorDataPublic_1" if index <= 10 else "brainTumorDataPublic_2")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(phantom_mats / f"{index}.mat", folder / f"{index}.mat")
    out = tmp_path / "src" / "brainTumorDataPublic_1"
    assert run_prepare("--src", tmp_path / "src", "--out", out, *ALL_TRAINING) == 0
    assert len(load_datalist(out)["training"]) == 20


def _grey_mask_source(src: Path) -> bytes:
    """PNG pairs 1-3 under ``src``, slice 2 with a grey (resampled) mask; return that mask's bytes."""
    write_png_pairs(src, (1, 2, 3))
    grey = np.zeros((24, 32), np.uint8)
    grey[4:10, 6:20] = 200
    Image.fromarray(grey).save(src / "masks" / "2.png")
    return (src / "masks" / "2.png").read_bytes()


def test_a_link_planted_where_prepare_writes_its_own_files_is_refused_and_the_source_masks_stay(tmp_path, capsys):
    src = tmp_path / "src"
    original = _grey_mask_source(src)
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "binarized_masks").symlink_to(src / "masks")
    assert run_prepare("--src", src, "--out", out, "--binarize", *ALL_TRAINING) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"{out / 'binarized_masks'}: refused: this output folder is a link" in err
    assert (src / "masks" / "2.png").read_bytes() == original
    assert not (out / "datalist.json").exists()


def test_binarize_writes_nothing_when_another_problem_stops_prepare(tmp_path, capsys):
    src = tmp_path / "src"
    _grey_mask_source(src)
    (src / "images" / "3.png").write_bytes(b"not a png")
    out = tmp_path / "dataset"
    assert run_prepare("--src", src, "--out", out, "--binarize", *ALL_TRAINING) == 1
    assert f"{src / 'images' / '3.png'}: cannot be read as an image" in capsys.readouterr().err
    assert not (out / "binarized_masks").exists()


def test_prepare_into_a_folder_another_run_is_writing_is_refused(tmp_path, capsys):
    from pipeline.outputs import output_folder_lock

    src = tmp_path / "src"
    write_png_pairs(src, (1, 2, 3))
    out = tmp_path / "dataset"
    with output_folder_lock(out):
        assert run_prepare("--src", src, "--out", out, *ALL_TRAINING) == 1
    assert f"{out}: another run (process {os.getpid()}) is writing here" in capsys.readouterr().err
    assert not (out / "datalist.json").exists()
    assert run_prepare("--src", src, "--out", out, *ALL_TRAINING) == 0
    assert sorted(path.name for path in out.iterdir()) == ["datalist.json"]
