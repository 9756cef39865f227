"""`infer` on what users point it at (one file, a mixed folder, a folder tree, a missing path) and its record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK

from pipeline import BUNDLE_NAME, __version__, default_bundle_dir
from pipeline.__main__ import main
from pipeline.networks import state_digest
from pipeline.outputs.lock import LOCK_NAME


def _png(path: Path) -> Path:
    image = np.zeros((40, 48), dtype=np.uint8)
    image[:, :24] = 220
    Image.fromarray(image).save(path)
    return path


def _infer(source: Path, output: Path, ckpt_dir: Path, *options: str) -> int:
    arguments = ["infer", "--input", str(source), "--output", str(output), "--device", "cpu", *options]
    arguments += ["--ckpt_dir", str(ckpt_dir), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]
    return main([*arguments, "--num_workers", "0"])


def _record(output: Path) -> dict:
    return json.loads((output / "inference_record.json").read_text())


def _files(folder: Path) -> list[str]:
    """The outputs in ``folder``, without the lock file that keeps a second run out while one writes."""
    files = (path for path in folder.rglob("*") if path.is_file() and path.name != LOCK_NAME)
    return sorted(path.relative_to(folder).as_posix() for path in files)


def test_a_single_file_is_segmented(tmp_path, ckpt_dir, capsys):
    source = _png(tmp_path / "7.png")
    assert _infer(source, tmp_path / "out", ckpt_dir, "--no-overlays") == 0
    assert _files(tmp_path / "out") == ["7_seg.nii.gz", "inference_record.json"]
    assert "(1 slices)" in capsys.readouterr().out


def test_files_of_other_types_are_named_and_fail_the_run_after_the_slices_are_written(tmp_path, ckpt_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "1.png")
    (folder / "2.dcm").write_bytes(b"DICM")
    (folder / "notes.txt").write_text("not a slice")
    assert _infer(folder, tmp_path / "out", ckpt_dir, "--no-overlays") == 1
    assert (tmp_path / "out" / "1_seg.nii.gz").is_file()
    error = capsys.readouterr().err
    assert "2 inputs were not segmented" in error
    assert f"{folder / '2.dcm'}: not a DICOM file" in error
    assert f"{folder / 'notes.txt'}: unsupported type; infer reads .mat, .png, .nii, .nii.gz and DICOM files" in error


def test_a_folder_with_nothing_to_segment_fails_and_writes_nothing(tmp_path, ckpt_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"DICM")
    assert _infer(folder, tmp_path / "out", ckpt_dir) == 1
    error = capsys.readouterr().err.strip().splitlines()
    reads = "infer reads 2D slices, 3D NIfTI volumes and DICOM series"
    assert error[0] == f"error: {folder}: nothing to segment; {reads}, and none of these could be used:"
    assert len(error) == 2 and error[1].startswith(f"  {folder / '1.dcm'}: not a DICOM file")
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


def test_recursive_segments_subfolders_and_mirrors_them_in_the_output(tmp_path, ckpt_dir):
    for folder in ("in/a", "in/b/c"):
        (tmp_path / folder).mkdir(parents=True)
        _png(tmp_path / folder / "1.png")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--recursive") == 0
    assert _files(tmp_path / "out") == [
        "a/1_seg.nii.gz",
        "b/c/1_seg.nii.gz",
        "inference_record.json",
        "overlays/a/1_overlay.png",
        "overlays/b/c/1_overlay.png",
    ]


def test_without_recursive_subfolders_are_left_alone(tmp_path, ckpt_dir):
    (tmp_path / "in" / "a").mkdir(parents=True)
    _png(tmp_path / "in" / "a" / "1.png")
    _png(tmp_path / "in" / "2.png")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--no-overlays") == 0
    assert _files(tmp_path / "out") == ["2_seg.nii.gz", "inference_record.json"]


def test_continue_segments_only_the_inputs_whose_outputs_are_incomplete(tmp_path, ckpt_dir, capsys):
    (tmp_path / "in").mkdir()
    for name in ("1.png", "2.png"):
        _png(tmp_path / "in" / name)
    out = tmp_path / "out"
    assert _infer(tmp_path / "in", out, ckpt_dir) == 0
    (out / "overlays" / "2_overlay.png").unlink()  # as if the run had stopped between mask and overlay
    kept = (out / "1_seg.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert _infer(tmp_path / "in", out, ckpt_dir, "--continue") == 0
    assert "(1 slices, 1 already done)" in capsys.readouterr().out
    assert (out / "1_seg.nii.gz").stat().st_mtime_ns == kept and (out / "overlays" / "2_overlay.png").is_file()
    statuses = {Path(entry["input"]).name: entry["status"] for entry in _record(out)["inputs"]}
    assert statuses == {"1.png": "skipped", "2.png": "written"}


def test_the_record_names_bundle_weights_settings_and_every_input(tmp_path, ckpt_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "1.png")
    (folder / "2.dcm").write_bytes(b"DICM")
    out = tmp_path / "out"
    assert _infer(folder, out, ckpt_dir, "--no-overlays", "--threshold", "0.7") == 1
    record = _record(out)
    metadata = json.loads((default_bundle_dir() / "configs" / "metadata.json").read_text())
    assert record["bundle"]["version"] == metadata["version"] and record["bundle"]["name"] == metadata["name"]
    weights = torch.load(ckpt_dir / "model.pt", weights_only=True)
    assert record["weights"] == {
        "path": str(ckpt_dir / "model.pt"),
        "sha256": hashlib.sha256((ckpt_dir / "model.pt").read_bytes()).hexdigest(),
        "models": [{"fold": None, "sha256": state_digest(weights.get("model", weights)), "used": True}],
    }
    settings = record["settings"]
    assert (settings["device"], settings["threshold"], settings["image_size"]) == ("cpu", 0.7, 32)
    assert settings["overrides"]["threshold"] == 0.7 and settings["save_overlays"] is False
    written, failed = record["inputs"]
    assert written == {
        "input": str(folder / "1.png"),
        "outputs": [str(out / "1_seg.nii.gz")],
        "status": "written",
        "reason": "",
        "note": "",
        "size": (folder / "1.png").stat().st_size,
    }
    assert (failed["input"], failed["outputs"], failed["status"]) == (str(folder / "2.dcm"), [], "failed")
    assert failed["reason"].startswith(f"{folder / '2.dcm'}: not a DICOM file")
    assert record["counts"] == {"written": 1, "failed": 1}


def test_an_input_that_cannot_be_read_is_recorded_as_failed_with_its_fault(tmp_path, ckpt_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "1.png")
    (folder / "2.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert _infer(folder, out, ckpt_dir, "--no-overlays") == 1
    assert "error: 1 of 2 inputs could not be segmented" in capsys.readouterr().err
    record = _record(out)
    assert record["settings"]["input"] == str(folder)
    entries = {Path(entry["input"]).name: entry for entry in record["inputs"]}
    assert entries["1.png"]["status"] == "written" and (out / "1_seg.nii.gz").is_file()
    assert entries["2.png"]["status"] == "failed" and entries["2.png"]["reason"].startswith(str(folder / "2.png"))
