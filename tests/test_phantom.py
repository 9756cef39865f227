"""Phantom data: figshare-format files, reproducible pixels, type-specific tumours, patient-wise folds."""

from collections import defaultdict

import numpy as np
import pytest
from scipy import ndimage

from pipeline.__main__ import main
from pipeline.data.figshare import read_cvind, read_figshare_slice
from pipeline.phantoms.slices import make_phantom_slice, phantom_cohort, synthesize_dataset

SMALL = {"patients": 3, "slices_per_patient": 2, "size": 128}


def read_dataset(folder, count):
    return [read_figshare_slice(folder / f"{index}.mat") for index in range(1, count + 1)]


def test_same_seed_gives_the_same_pixels(tmp_path):
    first = synthesize_dataset(tmp_path / "a", seed=7, **SMALL)
    second = synthesize_dataset(tmp_path / "b", seed=7, **SMALL)
    assert [path.name for path in first] == [path.name for path in second] == [f"{i}.mat" for i in range(1, 7)]
    for a, b in zip(read_dataset(tmp_path / "a", 6), read_dataset(tmp_path / "b", 6), strict=True):
        assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
        assert (a.pid, a.tumor_type) == (b.pid, b.tumor_type)
    assert np.array_equal(read_cvind(tmp_path / "a" / "cvind.mat"), read_cvind(tmp_path / "b" / "cvind.mat"))


def test_different_seed_gives_different_pixels(tmp_path):
    synthesize_dataset(tmp_path / "a", seed=1, **SMALL)
    synthesize_dataset(tmp_path / "b", seed=2, **SMALL)
    for a, b in zip(read_dataset(tmp_path / "a", 6), read_dataset(tmp_path / "b", 6), strict=True):
        assert a.image.tobytes() != b.image.tobytes()


def test_every_slice_is_a_valid_figshare_slice_with_a_tumour(tmp_path):
    paths = synthesize_dataset(tmp_path, patients=3, slices_per_patient=3, size=128, seed=0)
    for item in read_dataset(tmp_path, len(paths)):
        assert item.image.shape == item.mask.shape == (128, 128) and item.image.dtype == np.int16
        assert item.mask.any(), "every slice shows its patient's tumour"
        assert len(item.border) > 0
        assert item.image.max() > 400, "raw-scanner-like intensities, not 0..1"
        assert np.median(item.image[:8, :8]) < 60, "dark background outside the head"


def test_scalp_is_as_bright_as_the_tumour(tmp_path):
    image, mask = make_phantom_slice(np.random.default_rng(5), tumor_type=1, size=256)
    tumour_level = np.median(image[mask.astype(bool)])
    bright_elsewhere = (image > 0.8 * tumour_level) & ~ndimage.binary_dilation(mask.astype(bool), iterations=3)
    assert bright_elsewhere.sum() > mask.sum(), "a threshold alone must not find the tumour"


def tumour_geometry(tumor_type, seeds=range(8), size=128):
    """Per slice: tumour area, its depth inside the head (0 at the outline, 1 at the deepest point), centroid."""
    rows = []
    for seed in seeds:
        image, mask = make_phantom_slice(np.random.default_rng(seed), tumor_type, size)
        head = ndimage.binary_fill_holes(image > 0.25 * np.percentile(image, 99))
        depth = ndimage.distance_transform_edt(head)
        row, col = np.argwhere(mask).mean(axis=0) / size
        rows.append((mask.sum(), depth[mask.astype(bool)].min() / depth.max(), row, col))
    return np.array(rows)


def test_tumour_types_grow_in_their_own_places():
    meningioma, glioma, pituitary = (tumour_geometry(code) for code in (1, 2, 3))
    assert (meningioma[:, 1] < 0.2).all(), "meningiomas sit on the brain surface, against the inner skull"
    assert (glioma[:, 1] > 0.25).all(), "gliomas grow inside the brain"
    assert (np.abs(pituitary[:, 3] - 0.5) < 0.06).all(), "pituitary tumours sit on the midline"
    assert ((pituitary[:, 2] > 0.55) & (pituitary[:, 2] < 0.75)).all(), "... below the centre"
    assert np.median(pituitary[:, 0]) < min(np.median(meningioma[:, 0]), np.median(glioma[:, 0]))


def test_folds_are_patient_wise_and_stratified_by_type(tmp_path):
    paths = synthesize_dataset(tmp_path, patients=15, slices_per_patient=2, size=128, seed=3)
    folds = read_cvind(tmp_path / "cvind.mat")
    assert len(folds) == len(paths) and set(folds) == {1, 2, 3, 4, 5}
    folds_of_patient, type_of_patient = defaultdict(set), {}
    for item, fold in zip(read_dataset(tmp_path, len(paths)), folds, strict=True):
        folds_of_patient[item.pid].add(int(fold))
        assert type_of_patient.setdefault(item.pid, item.tumor_type) == item.tumor_type
    assert all(len(patient_folds) == 1 for patient_folds in folds_of_patient.values())
    patients_per_type = defaultdict(list)
    for pid, code in type_of_patient.items():
        patients_per_type[code].append(next(iter(folds_of_patient[pid])))
    assert {code: len(fold_list) for code, fold_list in patients_per_type.items()} == {1: 5, 2: 5, 3: 5}
    assert all(sorted(fold_list) == [1, 2, 3, 4, 5] for fold_list in patients_per_type.values())


def test_patient_ids_are_unique_strings_in_both_figshare_styles():
    pids = [patient.pid for patient in phantom_cohort(30, seed=0)]
    assert len(set(pids)) == 30
    assert any(pid.isdigit() for pid in pids)
    assert any(pid.startswith("MR") and len(pid) == 8 and pid[2:].isdigit() for pid in pids)


def run_synth(argv):
    return main(["synth", *argv])


def test_synth_command_writes_a_dataset_and_summarises_it(tmp_path, capsys):
    out = tmp_path / "phantom"
    assert run_synth(["--out", str(out), "--patients", "3", "--slices", "1", "--size", "128", "--seed", "4"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["1.mat", "2.mat", "3.mat", "cvind.mat"]
    summary = capsys.readouterr().out.strip()
    assert "\n" not in summary
    assert "3 slices of 3 patients (1 meningioma, 1 glioma, 1 pituitary)" in summary


def test_synth_command_never_overwrites_mat_files(tmp_path, capsys):
    (tmp_path / "1.mat").write_bytes(b"user data")
    assert run_synth(["--out", str(tmp_path), "--size", "128"]) == 1
    assert (tmp_path / "1.mat").read_bytes() == b"user data"
    assert f"{tmp_path}: already holds .mat files" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [{"size": 32}, {"patients": 0}, {"slices_per_patient": 0}])
def test_synthesize_refuses_impossible_sizes(tmp_path, arguments):
    with pytest.raises(ValueError, match="synthesize_dataset: need"):
        synthesize_dataset(tmp_path, **{**SMALL, **arguments})
