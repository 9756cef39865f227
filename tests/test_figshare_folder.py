"""A folder as figshare ships it (slices plus the fold file cvind.mat) segments through both CLIs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_bundle import THRESHOLD_NETWORK

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.data.sources import CVIND_NAME, slice_datalist
from pipeline.inference.discovery import find_inputs
from pipeline.phantoms.slices import synthesize_dataset

SUFFIXES = [".mat", ".png", ".nii", ".nii.gz"]
SETTINGS = {"image_size": 32, "num_workers": 0, "network_def": THRESHOLD_NETWORK}


@pytest.fixture(scope="module")
def figshare_folder(tmp_path_factory) -> Path:
    """Two phantom slices and cvind.mat, as `python -m pipeline synth` writes them."""
    folder = tmp_path_factory.mktemp("figshare")
    synthesize_dataset(folder, patients=2, slices_per_patient=1, size=128, seed=0)
    assert (folder / CVIND_NAME).is_file()
    return folder


def test_the_fold_file_is_noted_and_skipped_not_taken_for_a_slice(figshare_folder):
    found = find_inputs(figshare_folder, SUFFIXES)
    assert sorted(path.name for path in found.slices) == ["1.mat", "2.mat"]
    assert list(found.notes) == [figshare_folder / CVIND_NAME] and not found.left_out
    assert [Path(entry["image"]).name for entry in slice_datalist(figshare_folder, SUFFIXES)] == ["1.mat", "2.mat"]


def test_infer_segments_a_figshare_folder_and_exits_0(figshare_folder, ckpt_dir, tmp_path, capsys):
    arguments = ["infer", "--input", str(figshare_folder), "--output", str(tmp_path / "masks"), "--device", "cpu"]
    arguments += ["--ckpt_dir", str(ckpt_dir)]
    for key, value in SETTINGS.items():
        arguments += [f"--{key}", json.dumps(value)]
    assert main(arguments) == 0, capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "masks").glob("*.nii.gz")) == ["1_seg.nii.gz", "2_seg.nii.gz"]


def test_monai_bundle_run_segments_a_figshare_folder_and_exits_0(figshare_folder, ckpt_dir, tmp_path):
    command = [sys.executable, "-m", "monai.bundle", "run"]
    command += ["--config_file", "['configs/common.json','configs/inference.json']"]
    command += ["--dataset_dir", str(figshare_folder), "--ckpt_dir", str(ckpt_dir)]
    command += ["--output_dir", str(tmp_path / "masks"), "--device", "$torch.device('cpu')"]
    for key, value in SETTINGS.items():
        command += [f"--{key}", repr(value)]
    result = subprocess.run(command, cwd=default_bundle_dir(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(path.name for path in (tmp_path / "masks").glob("*.nii.gz")) == ["1_seg.nii.gz", "2_seg.nii.gz"]
