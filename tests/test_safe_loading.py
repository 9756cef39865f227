"""Checkpoints load with weights_only: a checkpoint holding pickled objects is refused, and runs nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.__main__ import main
from pipeline.checkpoints import UnsafeCheckpointError, load_checkpoint

UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    UNPICKLED.append("ran")
    return "payload"


class _Payload:
    """An object whose unpickling calls a function, as a malicious checkpoint would call os.system."""

    def __reduce__(self):
        return _record_unpickling, ()


def _checkpoint_with_payload(path: Path) -> dict:
    network = torch.nn.Conv2d(1, 2, kernel_size=1)
    torch.save({**network.state_dict(), "extra": _Payload()}, path)
    return {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}


def test_a_checkpoint_holding_pickled_objects_is_refused_naming_the_file_and_runs_nothing(tmp_path):
    _checkpoint_with_payload(tmp_path / "model.pt")
    UNPICKLED.clear()
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_checkpoint(tmp_path / "model.pt")
    assert str(caught.value).startswith(f"{tmp_path / 'model.pt'}: refused") and "\n" not in str(caught.value)
    assert not UNPICKLED


def test_inference_refuses_a_checkpoint_holding_pickled_objects(tmp_path, capsys):
    definition = _checkpoint_with_payload(tmp_path / "model.pt")
    (tmp_path / "inputs").mkdir()
    Image.fromarray(np.full((20, 20), 50, dtype=np.uint8)).save(tmp_path / "inputs" / "slice.png")
    UNPICKLED.clear()
    arguments = ["infer", "--input", str(tmp_path / "inputs"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    arguments += ["--ckpt_dir", str(tmp_path), "--network_def", json.dumps(definition), "--num_workers", "0"]
    assert main([*arguments, "--image_size", "32"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()  # refused before the engine runs: no traceback logged on the way
    assert "model.pt: refused: the checkpoint holds pickled Python objects" in line
    assert "Traceback" not in captured.out
    assert not UNPICKLED
    assert not list((tmp_path / "out").glob("*_seg.*"))


def test_a_plain_state_dict_loads(tmp_path):
    network = torch.nn.Conv2d(1, 2, kernel_size=1)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    assert set(load_checkpoint(tmp_path / "model.pt")) == {"weight", "bias"}


def test_a_torchscript_model_in_place_of_the_weights_is_one_error_line(tmp_path, capsys):
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(1, 2, kernel_size=1)), tmp_path / "model.pt")
    (tmp_path / "inputs").mkdir()
    Image.fromarray(np.full((20, 20), 50, dtype=np.uint8)).save(tmp_path / "inputs" / "slice.png")
    arguments = ["infer", "--input", str(tmp_path / "inputs"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*arguments, "--ckpt_dir", str(tmp_path), "--num_workers", "0"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith(f"error: {tmp_path / 'model.pt'}: a TorchScript model, not a checkpoint of weights")
    assert "Traceback" not in captured.out
