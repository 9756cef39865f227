"""What infer writes is what its record says: no two inputs share an output, one run per folder, bad pixel values
named per input, outputs readable as the umask allows, nothing left behind by a killed run."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK

from pipeline.__main__ import main
from pipeline.outputs.lock import output_folder_lock


def _infer(source: Path, output: Path, ckpt_dir: Path, *options: str) -> int:
    arguments = ["infer", "--input", str(source), "--output", str(output), "--device", "cpu", "--no-overlays"]
    arguments += ["--ckpt_dir", str(ckpt_dir), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]
    return main([*arguments, "--num_workers", "0", *options])


def _slice(path: Path, values: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((40, 48), dtype=np.float32) if values is None else values
    image[:, :24] = 200
    if path.suffix == ".png":
        Image.fromarray(image.astype(np.uint8)).save(path)
    else:
        nib.save(nib.Nifti1Image(image, np.eye(4)), path)
    return path


def test_two_inputs_that_would_write_one_mask_are_refused_before_anything_is_written(tmp_path, ckpt_dir, capsys):
    _slice(tmp_path / "in" / "a.png")
    _slice(tmp_path / "in" / "a.nii.gz")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 1
    error = capsys.readouterr().err
    assert f"{tmp_path / 'out' / 'a_seg.nii.gz'}:" in error and "a.png" in error and "a.nii.gz" in error
    assert not list((tmp_path / "out").glob("*seg*")) and not (tmp_path / "out" / "inference_record.json").exists()


def test_a_second_run_into_a_folder_being_written_is_refused_naming_the_holder(tmp_path, ckpt_dir, capsys):
    _slice(tmp_path / "in" / "a.png")
    with output_folder_lock(tmp_path / "out"):
        assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 1
    assert f"another run (process {os.getpid()}) is writing here" in capsys.readouterr().err
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 0  # released when the holder ends


def test_a_slice_with_nan_pixels_is_refused_and_recorded_while_the_others_are_segmented(tmp_path, ckpt_dir, capsys):
    values = np.zeros((40, 48), dtype=np.float32)
    values[5, 30] = np.nan
    _slice(tmp_path / "in" / "bad.nii.gz", values)
    _slice(tmp_path / "in" / "good.nii.gz")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 1
    assert "NaN or infinite" in capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "inference_record.json").read_text())
    status = {Path(entry["input"]).name: (entry["status"], entry["reason"]) for entry in record["inputs"]}
    assert status["good.nii.gz"][0] == "written" and (tmp_path / "out" / "good_seg.nii.gz").is_file()
    assert status["bad.nii.gz"][0] == "failed" and "1 of 1920 pixels are NaN or infinite" in status["bad.nii.gz"][1]
    assert not (tmp_path / "out" / "bad_seg.nii.gz").exists()


def test_outputs_get_the_mode_the_umask_gives(tmp_path, ckpt_dir):
    _slice(tmp_path / "in" / "a.png")
    previous = os.umask(0o027)
    try:
        assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 0
    finally:
        os.umask(previous)
    for name in ("a_seg.nii.gz", "inference_record.json"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o640, name


def test_temporary_files_of_a_killed_run_are_removed_at_the_next_start(tmp_path, ckpt_dir):
    _slice(tmp_path / "in" / "a.png")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 0
    handle, left = tempfile.mkstemp(prefix=".", suffix="~b_seg.nii.gz", dir=tmp_path / "out")  # as atomic_path
    os.close(handle)
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--overwrite") == 0
    assert not Path(left).exists() and (tmp_path / "out" / "a_seg.nii.gz").is_file()


def test_a_run_that_dies_leaves_its_own_record_not_the_previous_one(tmp_path, ckpt_dir, monkeypatch):
    _slice(tmp_path / "in" / "a.png")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 0
    assert json.loads((tmp_path / "out" / "inference_record.json").read_text())["state"] == "finished"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.inference.predictor.BundlePredictor.segment_slice_files", killed)
    with pytest.raises(KeyboardInterrupt):
        _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--overwrite", "--threshold", "0.7")
    record = json.loads((tmp_path / "out" / "inference_record.json").read_text())
    assert record["state"] == "running" and record["settings"]["threshold"] == 0.7
    assert [entry["status"] for entry in record["inputs"]] == ["pending"]


def test_a_png_declaring_too_many_pixels_is_refused_before_it_is_decoded(tmp_path, ckpt_dir, capsys):
    _slice(tmp_path / "in" / "big.png")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--refuse_oversized#max_pixels", "1919") == 1
    assert "big.png: declares 1920 pixels, more than the 1919 a slice may have; not decoded" in capsys.readouterr().err


def test_continue_refuses_other_settings_and_redoes_an_output_that_does_not_read_back(tmp_path, ckpt_dir, capsys):
    for name in ("a", "b"):
        _slice(tmp_path / "in" / f"{name}.png")
    out = tmp_path / "out"
    assert _infer(tmp_path / "in", out, ckpt_dir) == 0
    assert _infer(tmp_path / "in", out, ckpt_dir, "--continue", "--threshold", "0.7") == 1
    assert "--continue would keep outputs made otherwise: threshold was 0.5, now 0.7" in capsys.readouterr().err
    (out / "a_seg.nii.gz").write_bytes(b"")  # a truncated mask, as a full disk or a hand copy leaves it
    kept = (out / "b_seg.nii.gz").stat().st_mtime_ns
    assert _infer(tmp_path / "in", out, ckpt_dir, "--continue") == 0
    assert (out / "a_seg.nii.gz").stat().st_size > 0 and (out / "b_seg.nii.gz").stat().st_mtime_ns == kept
    statuses = {
        Path(entry["input"]).name: entry["status"]
        for entry in json.loads((out / "inference_record.json").read_text())["inputs"]
    }
    assert statuses == {"a.png": "written", "b.png": "skipped"}


def test_continue_redoes_a_mask_whose_shape_is_not_its_inputs(tmp_path, ckpt_dir):
    for name in ("a", "b"):
        _slice(tmp_path / "in" / f"{name}.png")
    out = tmp_path / "out"
    assert _infer(tmp_path / "in", out, ckpt_dir) == 0
    # A whole, readable mask, but of another slice: the input is 48 x 40 (MONAI's width, height), this 40 x 48.
    nib.save(nib.Nifti1Image(np.zeros((40, 48), dtype=np.uint8), np.eye(4)), out / "a_seg.nii.gz")
    kept = (out / "b_seg.nii.gz").stat().st_mtime_ns
    assert _infer(tmp_path / "in", out, ckpt_dir, "--continue") == 0
    assert nib.load(out / "a_seg.nii.gz").shape[:2] == (48, 40)
    assert (out / "b_seg.nii.gz").stat().st_mtime_ns == kept


def test_the_output_names_come_from_the_configured_writers_in_plan_record_and_continue(tmp_path, ckpt_dir):
    _slice(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    renamed = ("--mask_writers#0#output_postfix", "mask")
    assert _infer(tmp_path / "in", out, ckpt_dir, *renamed) == 0
    assert sorted(path.name for path in out.glob("[!.]*")) == ["a_mask.nii.gz", "inference_record.json"]
    record = json.loads((out / "inference_record.json").read_text())
    assert record["inputs"][0]["outputs"] == [str(out / "a_mask.nii.gz")]

    assert _infer(tmp_path / "in", out, ckpt_dir, *renamed, "--continue") == 0
    record = json.loads((out / "inference_record.json").read_text())
    assert record["inputs"][0]["status"] == "skipped" and not (out / "a_seg.nii.gz").exists()


def test_one_run_reads_the_bundle_configs_once_and_loads_the_weights_once(tmp_path, ckpt_dir, monkeypatch):
    from monai.bundle import ConfigParser

    calls = {"read_config": 0, "load": 0}

    def counted(owner, name):
        original = getattr(owner, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)

    counted(ConfigParser, "read_config")
    counted(torch, "load")
    _slice(tmp_path / "in" / "a.png")
    _slice(tmp_path / "in" / "volume.nii.gz", np.zeros((40, 48, 3), dtype=np.float32))
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 0
    assert (tmp_path / "out" / "a_seg.nii.gz").is_file() and (tmp_path / "out" / "volume_seg.nii.gz").is_file()
    assert calls == {"read_config": 1, "load": 1}


def test_the_record_is_rewritten_as_slices_finish_so_a_killed_run_says_which_are_done(tmp_path, ckpt_dir, monkeypatch):
    from pipeline.engines import FailureTolerantEvaluator

    for name in ("a", "b"):
        _slice(tmp_path / "in" / f"{name}.png")
    iteration = FailureTolerantEvaluator._iteration

    def killed_at_the_second(self, engine, batch):
        if engine.state.iteration == 2:
            raise KeyboardInterrupt
        return iteration(self, engine, batch)

    monkeypatch.setattr(FailureTolerantEvaluator, "_iteration", killed_at_the_second)
    monkeypatch.setattr("pipeline.commands.infer.RECORD_INTERVAL", 0.0)
    with pytest.raises(KeyboardInterrupt):
        _infer(tmp_path / "in", tmp_path / "out", ckpt_dir)
    record = json.loads((tmp_path / "out" / "inference_record.json").read_text())
    assert record["state"] == "running"
    assert {Path(entry["input"]).name: entry["status"] for entry in record["inputs"]} == {
        "a.png": "written",
        "b.png": "pending",
    }
    assert (tmp_path / "out" / "a_seg.nii.gz").is_file() and not (tmp_path / "out" / "b_seg.nii.gz").exists()


def test_scans_declaring_too_many_pixels_are_refused_before_they_are_decoded(tmp_path, ckpt_dir, capsys, monkeypatch):
    from pipeline.dicom.series import read_dicom_folder
    from pipeline.phantoms.dicom_series import write_phantom_series

    monkeypatch.setattr("pipeline.data.pixel_budget.MAX_PIXELS", 1919)
    volume = _slice(tmp_path / "in" / "volume.nii.gz", np.zeros((40, 48, 3), dtype=np.float32))
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir) == 1
    error = capsys.readouterr().err
    assert f"{volume}: could not be segmented: declares slices of 1920 pixels, more than the 1919 a slice" in error
    record = json.loads((tmp_path / "out" / "inference_record.json").read_text())
    assert record["inputs"][0]["status"] == "failed" and not (tmp_path / "out" / "volume_seg.nii.gz").exists()

    first = write_phantom_series(tmp_path / "dicom", patients=1, slices=2, size=128, seed=0)[0]
    series, failures = read_dicom_folder(tmp_path / "dicom")
    assert (
        series == [] and f"{first}: declares slices of 16384 pixels, more than the 1919 a slice may have" in failures[0]
    )
