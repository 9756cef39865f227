"""3D volumes segmented slice by slice: the training orientation of every slice, exact geometry, NIfTI in and out."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK, save_threshold_network

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.inference.predictor import BundlePredictor
from pipeline.inference.scans import slice_axis
from pipeline.inference.slice_segmenter import SliceSegmenter
from pipeline.phantoms.slices import make_phantom_slice

CPU = "$torch.device('cpu')"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# An acquisition plane as DICOM gives it (LPS): the directions of the displayed image's columns and rows.
PLANES = {
    "axial": ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),  # columns to the patient's left, rows to the back
    "coronal": ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),  # columns to the left, rows to the feet
    "sagittal": ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),  # columns to the back, rows to the feet
}
# How a volume may be stored: each voxel axis of the (column, row, slice) volume goes to axis [0] of the stored
# array, flipped when [1] is -1 (nibabel's orientation arrays).
STORAGES = {
    "as displayed": [[0, 1], [1, 1], [2, 1]],
    "permuted and flipped": [[2, -1], [0, 1], [1, -1]],
    "slices first, reversed": [[1, -1], [2, 1], [0, -1]],
}


@pytest.fixture
def threshold_model(tmp_path: Path) -> dict:
    """Overrides that make the bundle a 1x1 convolution marking the pixels above the middle of each slice's
    intensity range: a 'model' whose mask is known exactly, whatever the orientation."""
    folder = tmp_path / "models"
    folder.mkdir()
    save_threshold_network(folder / "model.pt")
    return {"ckpt_dir": str(folder), "network_def": THRESHOLD_NETWORK, "image_size": 32}


def _cli(overrides: dict) -> list[str]:
    """``overrides`` as infer's command-line arguments, on the CPU."""
    return ["--device", "cpu", *(item for key, value in overrides.items() for item in (f"--{key}", json.dumps(value)))]


@pytest.fixture(scope="module")
def release_segmenter() -> SliceSegmenter:
    return BundlePredictor(default_bundle_dir(), {"device": CPU}).build().slice_segmenter


@pytest.fixture(scope="module")
def displayed_slices() -> np.ndarray:
    """Three phantom slices as displayed, (3, rows, cols) 8-bit; the middle one holds a tumour off-centre."""
    rng = np.random.default_rng(3)
    images = [make_phantom_slice(rng, tumor_type, size=256)[0] for tumor_type in (1, 2, 3)]
    return np.stack([np.clip(image / image.max() * 255, 0, 255).astype(np.uint8) for image in images])


@pytest.fixture(scope="module")
def png_mask(displayed_slices: np.ndarray, tmp_path_factory) -> np.ndarray:
    """The release model's mask of the middle slice given as a PNG file, as displayed (rows, cols)."""
    folder = tmp_path_factory.mktemp("png")
    Image.fromarray(displayed_slices[1]).save(folder / "slice.png")
    arguments = ["infer", "--input", str(folder / "slice.png"), "--output", str(folder / "out"), "--format", "png"]
    assert main([*arguments, "--no-overlays", "--device", "cpu", "--num_workers", "0"]) == 0
    mask = np.asarray(Image.open(folder / "out" / "slice_seg.png")) > 0
    # A mask that a flip or a transpose leaves unchanged could not tell a wrong orientation from the right one.
    assert mask.sum() > 100 and all((mask != changed).any() for changed in (mask[::-1], mask[:, ::-1], mask.T))
    return mask


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("plane", PLANES)
def test_a_slice_inside_a_volume_gets_the_mask_it_gets_as_a_png_in_every_orientation(
    release_segmenter, displayed_slices, png_mask, plane, storage
):
    columns, rows = (np.array(direction) for direction in PLANES[plane])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = columns * 0.5, rows * 0.5, np.cross(columns, rows) * 6.0
    lps[:3, 3] = [-60.0, -70.0, 20.0]
    volume, affine = displayed_slices.transpose(2, 1, 0).astype(np.float32), LPS_TO_RAS @ lps  # (col, row, slice)
    ornt = np.array(STORAGES[storage])
    stored = nib.orientations.apply_orientation(volume, ornt)
    stored_affine = affine @ nib.orientations.inv_ornt_aff(ornt, volume.shape)

    mask = release_segmenter.segment(stored, stored_affine, slice_axis=int(ornt[2, 0]))

    assert mask.shape == stored.shape and mask.dtype == np.uint8
    inverse = np.zeros_like(ornt)
    for axis, (stored_axis, flip) in enumerate(ornt):
        inverse[stored_axis] = [axis, flip]
    back = nib.orientations.apply_orientation(mask, inverse)
    np.testing.assert_array_equal(back[:, :, 1].T, png_mask)


def test_the_mask_maps_back_to_the_volumes_voxels_under_any_affine(threshold_model):
    segmenter = BundlePredictor(default_bundle_dir(), {**threshold_model, "device": CPU}).build().slice_segmenter
    volume = np.zeros((32, 32, 32), dtype=np.float32)
    volume[4:20, 6:14, 3:29] = 100.0
    volume[4:10, 14:26, 3:29] = 100.0  # an L in every slice, so a flip or transpose would show
    rotation = nib.eulerangles.euler2mat(0.3, -0.2, 0.1)
    for ornt in ([[0, 1], [1, 1], [2, 1]], [[1, -1], [2, 1], [0, -1]], [[2, 1], [0, -1], [1, 1]]):
        affine = nib.orientations.inv_ornt_aff(np.array(ornt), volume.shape)
        affine[:3] = np.hstack([rotation, np.zeros((3, 1))]) @ affine
        for axis in range(3):
            np.testing.assert_array_equal(segmenter.segment(volume, affine, axis), volume > 0)


def test_the_slice_axis_is_the_axis_of_largest_spacing_the_last_on_ties():
    assert slice_axis((0.5, 0.5, 6.0)) == 2
    assert slice_axis((5.0, 1.0, 1.0)) == 0
    assert slice_axis((1.0, 1.0, 1.0)) == 2
    assert slice_axis((1.0, 3.0, 3.0001)) == 2
    assert slice_axis((1.0, 3.0, 2.9)) == 1


def _save(path: Path, data: np.ndarray, zooms: tuple[float, ...]) -> nib.Nifti1Image:
    affine = nib.orientations.inv_ornt_aff(np.array([[1, -1], [0, 1], [2, 1]]), data.shape) @ np.diag([*zooms, 1.0])
    affine[:3, 3] += [12.5, -30.0, 7.25]
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    image.header.set_slope_inter(2.0, 0.0)
    nib.save(image, path)
    return nib.load(path)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_3d_nifti_gets_a_mask_with_its_shape_and_affine_cut_along_its_thickest_axis(tmp_path, threshold_model, axis):
    volume = np.zeros((32, 32, 32), dtype=np.int16)
    volume[6:24, 8:20, 5:27] = 100
    # One uniform slice across the volume along ``axis``: cut along ``axis`` it is empty; cut across, it would
    # be a bright line in every slice and join the mask.
    np.moveaxis(volume, axis, 0)[16] = 60
    expected = volume == 100
    zooms = tuple(5.0 if index == axis else 0.8 for index in range(3))
    (tmp_path / "in").mkdir()
    source = _save(tmp_path / "in" / "scan.nii.gz", volume, zooms)
    out = tmp_path / "out"
    arguments = ["infer", "--input", str(tmp_path / "in"), "--output", str(out), *_cli(threshold_model)]
    assert main(arguments) == 0

    mask = nib.load(out / "scan_seg.nii.gz")
    assert mask.shape == source.shape and mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(mask.affine, source.affine)
    np.testing.assert_array_equal(mask.get_qform(), source.get_qform())
    assert (int(mask.header["qform_code"]), int(mask.header["sform_code"])) == (1, 2)
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), expected.astype(np.uint8))
    entries = json.loads((out / "inference_record.json").read_text())["inputs"]
    assert entries == [
        {
            "input": str(tmp_path / "in" / "scan.nii.gz"),
            "outputs": [str(out / "scan_seg.nii.gz")],
            "status": "written",
            "reason": "",
            "note": "",
            "size": (tmp_path / "in" / "scan.nii.gz").stat().st_size,
        }
    ]


def test_a_nifti_of_one_slice_is_segmented_as_stored_like_a_2d_slice(tmp_path, threshold_model):
    image = np.zeros((40, 30), dtype=np.float32)
    image[5:25, 4:12] = 90.0
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "in" / "flat.nii.gz")
    nib.save(nib.Nifti1Image(image[..., None], np.diag([-1.0, 1.0, 1.0, 1.0])), tmp_path / "in" / "thin.nii.gz")
    out = tmp_path / "out"
    arguments = ["infer", "--input", str(tmp_path / "in"), "--output", str(out), "--no-overlays", "--num_workers", "0"]
    assert main([*arguments, *_cli(threshold_model)]) == 0
    flat, thin = (np.asanyarray(nib.load(out / f"{name}_seg.nii.gz").dataobj) for name in ("flat", "thin"))
    assert thin.shape == (40, 30, 1)
    np.testing.assert_array_equal(thin[..., 0], flat.reshape(40, 30))
    np.testing.assert_array_equal(thin[..., 0], image > 0)


def test_a_4d_nifti_is_named_with_its_shape_and_the_other_inputs_are_still_segmented(tmp_path, threshold_model, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.ones((32, 32, 4, 2), dtype=np.float32), np.eye(4)), folder / "dynamic.nii.gz")
    volume = np.zeros((32, 32, 3), dtype=np.float32)
    volume[8:20, 8:20] = 50.0
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 4.0, 1.0])), folder / "scan.nii")
    out = tmp_path / "out"
    assert main(["infer", "--input", str(folder), "--output", str(out), *_cli(threshold_model)]) == 1

    line = f"{folder / 'dynamic.nii.gz'}: a 4D NIfTI of shape (32, 32, 4, 2)"
    error = capsys.readouterr().err
    assert "1 inputs were not segmented" in error and line in error
    assert nib.load(out / "scan_seg.nii.gz").shape == (32, 32, 3)
    statuses = {
        Path(entry["input"]).name: (entry["status"], entry["reason"][: len(line)])
        for entry in json.loads((out / "inference_record.json").read_text())["inputs"]
    }
    assert statuses == {"scan.nii": ("written", ""), "dynamic.nii.gz": ("failed", line)}


def test_continue_skips_a_volume_whose_mask_is_complete(tmp_path, threshold_model, capsys):
    volume = np.zeros((32, 32, 3), dtype=np.float32)
    volume[8:20, 8:20] = 50.0
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "scan.nii.gz")
    arguments = ["infer", "--input", str(tmp_path / "scan.nii.gz"), "--output", str(tmp_path / "out")]
    assert main([*arguments, *_cli(threshold_model)]) == 0
    written = (tmp_path / "out" / "scan_seg.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*arguments, *_cli(threshold_model), "--continue"]) == 0
    assert "(1 already done)" in capsys.readouterr().out
    assert (tmp_path / "out" / "scan_seg.nii.gz").stat().st_mtime_ns == written
