"""A training killed with SIGKILL in the middle of an epoch resumes where its last checkpoint left it."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_bundle import TINY_TRAINING, phantom_dataset

from pipeline.__main__ import main
from pipeline.checkpoints import load_checkpoint

EPOCHS = 3
# Tiny net at 32 px; batches of 2 give the epoch enough iterations to be killed in its middle.
TINY = {key: value for key, value in TINY_TRAINING.items() if key not in ("epochs", "device")}
TINY.update(batch_size=2, cache_rate=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    phantom_dataset(root, seed=5)
    return root / "dataset"


def _train_command(dataset: Path, run_dir: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "pipeline", "train", "--dataset-dir", str(dataset), "--device", "cpu"]
    command += ["--ckpt_dir", str(run_dir / "models"), "--output_dir", str(run_dir / "training")]
    command += ["--epochs", str(EPOCHS), *extra]
    for key, value in TINY.items():
        command += [f"--{key}", json.dumps(value)]
    return command


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _curve(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "training" / "learning_curve.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _run_until_first_checkpoint_then_kill(command: list[str], ckpt_dir: Path) -> list[str]:
    """Start training, read its log until epoch 1 has completed and its checkpoint is written, then SIGKILL it."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_environment())
    seen: list[str] = []
    try:
        for line in process.stdout:
            seen.append(line)
            # The epoch's summary line comes just before the latest checkpoint is saved (written atomically).
            if f"epoch 1/{EPOCHS}: loss" in line:
                while not (ckpt_dir / "latest_checkpoint_epoch=1.pt").is_file() and process.poll() is None:
                    time.sleep(0.01)
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen[-30:])
    return [path.name for path in ckpt_dir.glob("latest_checkpoint_*.pt")]


def test_a_training_killed_mid_epoch_resumes_and_finishes_with_a_continuous_curve(dataset, tmp_path):
    run_dir = tmp_path / "run"
    checkpoints = _run_until_first_checkpoint_then_kill(_train_command(dataset, run_dir), run_dir / "models")
    assert checkpoints == ["latest_checkpoint_epoch=1.pt"]  # killed during epoch 2, before its checkpoint
    first_row = _curve(run_dir)[0]

    resumed = subprocess.run(
        _train_command(dataset, run_dir, "--resume"), capture_output=True, text=True, env=_environment(), timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"epoch 1/{EPOCHS}: loss" not in resumed.stdout  # epoch 1 was not trained again
    assert f"epoch {EPOCHS}/{EPOCHS}: loss" in resumed.stdout

    curve = _curve(run_dir)
    assert [int(row["epoch"]) for row in curve] == list(range(1, EPOCHS + 1))
    assert curve[0] == first_row
    (latest,) = (run_dir / "models").glob("latest_checkpoint_*.pt")
    assert latest.name == f"latest_checkpoint_epoch={EPOCHS}.pt"
    state = load_checkpoint(latest)
    assert state["trainer"]["iteration"] == EPOCHS * state["trainer"]["epoch_length"]
    best_dice = max(float(row["val_mean_dice"]) for row in curve)
    assert state["validator"]["best_metric"] == pytest.approx(best_dice, rel=1e-5)
    best = load_checkpoint(run_dir / "models" / "model.pt")
    assert best and all(torch.isfinite(tensor).all() for tensor in best.values())


def test_training_refuses_to_start_over_an_earlier_runs_checkpoints(dataset, tmp_path, capsys):
    (tmp_path / "models").mkdir()
    torch.save({}, tmp_path / "models" / "latest_checkpoint_epoch=4.pt")
    arguments = _train_command(dataset, tmp_path)[3:]
    assert main(arguments) == 1
    assert "pass --resume to continue it or --overwrite" in capsys.readouterr().err
    assert (tmp_path / "models" / "latest_checkpoint_epoch=4.pt").is_file()


def test_resume_without_a_checkpoint_says_there_is_nothing_to_resume(dataset, tmp_path, capsys):
    assert main(_train_command(dataset, tmp_path, "--resume")[3:]) == 1
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: resuming maps the checkpoint to it")
def test_random_states_of_a_checkpoint_mapped_to_the_gpu_restore_on_resume(tmp_path):
    from pipeline.checkpoints import RandomStates

    torch.save({"random_states": RandomStates().state_dict()}, tmp_path / "latest.pt")
    expected = (torch.rand(3), np.random.rand(3))
    loaded = torch.load(tmp_path / "latest.pt", map_location="cuda:0", weights_only=True)
    RandomStates().load_state_dict(loaded["random_states"])
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
