"""`infer` on what users point it at: one file, a mixed folder, a folder of other files, a missing path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import BUNDLE_NAME, __version__, default_bundle_dir
from pipeline.__main__ import main

THRESHOLD_NETWORK = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    """A 1x1-conv network, saved without a model definition, that marks the bright half of a slice."""
    folder = tmp_path / "models"
    folder.mkdir()
    network = torch.nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1))
        network.bias.copy_(torch.tensor([0.5, -0.5]))
    torch.save(network.state_dict(), folder / "model.pt")
    return folder


def _png(path: Path) -> Path:
    image = np.zeros((40, 48), dtype=np.uint8)
    image[:, :24] = 220
    Image.fromarray(image).save(path)
    return path


def _infer(source: Path, output: Path, ckpt_dir: Path) -> int:
    arguments = ["infer", "--input", str(source), "--output", str(output), "--device", "cpu", "--no-overlays"]
    arguments += ["--ckpt_dir", str(ckpt_dir), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]
    return main([*arguments, "--num_workers", "0"])


def test_a_single_file_is_segmented(tmp_path, ckpt_dir, capsys):
    source = _png(tmp_path / "7.png")
    assert _infer(source, tmp_path / "out", ckpt_dir) == 0
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["7_seg.nii.gz"]
    assert "(1 slices)" in capsys.readouterr().out


def test_files_of_other_types_are_named_and_fail_the_run_after_the_slices_are_written(tmp_path, ckpt_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "1.png")
    (folder / "2.dcm").write_bytes(b"DICM")
    (folder / "notes.txt").write_text("not a slice")
    assert _infer(folder, tmp_path / "out", ckpt_dir) == 1
    assert (tmp_path / "out" / "1_seg.nii.gz").is_file()
    error = capsys.readouterr().err
    assert "2 files were not segmented" in error
    assert f"{folder / '2.dcm'}: unsupported type" in error and "DICOM is not read yet" in error
    assert f"{folder / 'notes.txt'}: unsupported type; infer reads .mat, .png, .nii, .nii.gz" in error


def test_a_folder_with_nothing_to_segment_fails_and_writes_nothing(tmp_path, ckpt_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"DICM")
    assert _infer(folder, tmp_path / "out", ckpt_dir) == 1
    error = capsys.readouterr().err.strip()
    reads = "infer reads .mat, .png, .nii, .nii.gz"
    assert error == f"error: {folder}: no slice to segment (1 files of other types); {reads}"
    assert not (tmp_path / "out").exists()


def test_a_missing_input_is_named(tmp_path, ckpt_dir, capsys):
    assert _infer(tmp_path / "missing", tmp_path / "out", ckpt_dir) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no such file or folder"
    assert not (tmp_path / "out").exists()


def test_version_names_the_package_and_the_bundle(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    metadata = json.loads((default_bundle_dir() / "configs" / "metadata.json").read_text())
    assert capsys.readouterr().out.strip() == f"pipeline {__version__}, bundle {BUNDLE_NAME} {metadata['version']}"
