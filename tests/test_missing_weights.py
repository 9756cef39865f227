"""Every stage pointed at a folder without trained weights, or at an empty or truncated weights file, says so once, in
one `error:` line, with no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.__main__ import main

NO_WEIGHTS = "model.pt: no trained weights here"


def _dataset(tmp_path: Path) -> Path:
    """A datalist with one test slice: the weights are looked for before any slice is read."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    entry = {"image": "1.mat", "label": "1.mat", "pid": "P1", "tumor_type": 1, "tumor_type_name": "meningioma"}
    (folder / "datalist.json").write_text(json.dumps({"training": [], "validation": [], "test": [entry]}))
    return folder


def test_evaluate_without_weights_prints_the_message_once_and_no_traceback(tmp_path):
    empty = tmp_path / "runs" / "cpu"
    empty.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "evaluate",
        "--dataset-dir",
        str(_dataset(tmp_path)),
        "--device",
        "cpu",
    ]
    command += ["--ckpt_dir", str(empty), "--output_dir", str(tmp_path / "evaluation"), "--num_workers", "0"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {empty / 'model.pt'}: no trained weights here; train them (python -m pipeline train), fetch the "
        "released ones (python -m pipeline fetch-weights), or point --ckpt-dir at a folder holding model.pt"
    ]
    assert (result.stdout + result.stderr).count(NO_WEIGHTS) == 1
    assert "Traceback" not in result.stdout


def test_infer_without_weights_is_one_error_line(tmp_path, capsys):
    empty = tmp_path / "models"
    empty.mkdir()
    (tmp_path / "inputs").mkdir()
    Image.fromarray(np.full((40, 48), 200, dtype=np.uint8)).save(tmp_path / "inputs" / "1.png")
    arguments = ["infer", "--input", str(tmp_path / "inputs"), "--output", str(tmp_path / "masks"), "--device", "cpu"]
    assert main([*arguments, "--ckpt_dir", str(empty), "--num_workers", "0"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith(f"error: {empty / 'model.pt'}: no trained weights here")
    assert NO_WEIGHTS not in captured.out and "Traceback" not in captured.out


def test_check_of_a_weights_folder_without_weights_is_one_error_line(tmp_path, capsys):
    assert main(["check", "--ckpt_dir", str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {tmp_path / 'model.pt'}: no trained weights here")


def test_export_of_a_missing_checkpoint_is_one_error_line_before_any_work(tmp_path, capsys):
    assert main(["export", "--ckpt", str(tmp_path / "model.pt"), "--dist", str(tmp_path / "dist")]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"error: {tmp_path / 'model.pt'}: checkpoint not found; train first (python -m pipeline train) or pass --ckpt"
    ]
    assert "verify_metadata" not in captured.out
    assert not (tmp_path / "dist").exists()


def _damaged_weights(folder: Path, kind: str) -> Path:
    """``folder/model.pt`` as an empty file, or as the first half of a real checkpoint (a copy cut short)."""
    folder.mkdir(parents=True)
    path = folder / "model.pt"
    torch.save(torch.nn.Conv2d(1, 2, kernel_size=1).state_dict(), path)
    whole = path.read_bytes()
    path.write_bytes(b"" if kind == "empty" else whole[: len(whole) // 2])
    return path


@pytest.mark.parametrize(("kind", "reason"), [("empty", "the file is empty"), ("truncated", "truncated or damaged")])
def test_empty_or_truncated_weights_are_one_error_line_in_every_command(kind, reason, tmp_path, capsys):
    weights = _damaged_weights(tmp_path / "models", kind)
    expected = f"{weights}: not a complete PyTorch checkpoint ({reason}"
    (tmp_path / "inputs").mkdir()
    Image.fromarray(np.full((40, 48), 200, dtype=np.uint8)).save(tmp_path / "inputs" / "1.png")
    common = ["--device", "cpu", "--ckpt_dir", str(weights.parent), "--num_workers", "0"]
    commands = [
        ["infer", "--input", str(tmp_path / "inputs"), "--output", str(tmp_path / "masks"), *common],
        ["evaluate", "--dataset-dir", str(_dataset(tmp_path)), "--output_dir", str(tmp_path / "evaluation"), *common],
        ["export", "--ckpt", str(weights), "--dist", str(tmp_path / "dist")],
    ]
    for command in commands:
        assert main(command) == 1, command[0]
        captured = capsys.readouterr()
        (line,) = captured.err.splitlines()
        assert line.startswith(f"error: {expected}"), command[0]
        assert "Traceback" not in captured.out, command[0]
    assert not (tmp_path / "masks").exists() or not list((tmp_path / "masks").glob("*_seg.*"))
