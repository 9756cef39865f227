"""Data-parallel training: two gloo workers on CPU through torch.distributed.run and the multi-GPU override."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_bundle import TINY_TRAINING, phantom_dataset

from pipeline import default_bundle_dir
from pipeline.distributed import MULTI_GPU_TRAIN_CONFIG, launch_command, with_multi_gpu_config, worker_argv

BUNDLE = default_bundle_dir()
SAVE_FINAL_PARAMETERS = Path(__file__).resolve().parent / "configs" / "save_final_parameters_per_rank.json"
WORKERS = 2
# MONAI's command line reads the string "False" as the boolean (a plain "false" stays a string).
TINY = {**TINY_TRAINING, "batch_size": 2, "progress_bar": "False"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One epoch on phantoms by two CPU workers: ``torch.distributed.run`` + ``monai.bundle run``."""
    root = tmp_path_factory.mktemp("distributed")
    phantom_dataset(root, seed=5)
    configs = ["configs/common.json", "configs/train.json", f"configs/{MULTI_GPU_TRAIN_CONFIG}"]
    configs.append(str(SAVE_FINAL_PARAMETERS))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORKERS}"]
    command += ["-m", "monai.bundle", "run", "--config_file", json.dumps(configs)]
    command += ["--dataset_dir", str(root / "dataset"), "--ckpt_dir", str(root / "models")]
    command += ["--output_dir", str(root / "training")]
    for key, value in TINY.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"dataset": root / "dataset", "ckpt_dir": root / "models", "train_dir": root / "training"}


def test_each_worker_trains_on_its_own_shard_of_the_training_set(trained):
    training = json.loads((trained["dataset"] / "datalist.json").read_text())["training"]
    shards = [
        [entry["slice_id"] for entry in json.loads((trained["train_dir"] / f"partition_rank{rank}.json").read_text())]
        for rank in range(WORKERS)
    ]
    shard_size = math.ceil(len(training) / WORKERS)
    assert [len(shard) for shard in shards] == [shard_size] * WORKERS  # equal steps per epoch on every worker
    assert set().union(*shards) == {entry["slice_id"] for entry in training}
    shared = set(shards[0]) & set(shards[1])
    assert len(shared) == shard_size * WORKERS - len(training)  # only the padding to equal sizes is repeated


def test_workers_end_with_identical_parameters_and_rank_zero_checkpoints_them(trained):
    finals = [
        torch.load(trained["train_dir"] / f"final_parameters_rank{rank}.pt", weights_only=True)
        for rank in range(WORKERS)
    ]
    (latest,) = trained["ckpt_dir"].glob("latest_checkpoint*.pt")
    checkpointed = torch.load(latest, map_location="cpu", weights_only=True)["model"]
    for name, value in finals[0].items():
        assert torch.equal(value, finals[1][name]), name
        assert torch.equal(value, checkpointed[name]), name


def test_only_rank_zero_writes_checkpoints_and_learning_curve(trained):
    # model_config.json, the same definition in every worker, is written by each one atomically.
    written = sorted(path.name for path in trained["ckpt_dir"].iterdir())
    assert written == ["latest_checkpoint_epoch=1.pt", "model.pt", "model_config.json"]
    curve = (trained["train_dir"] / "learning_curve.csv").read_text().splitlines()
    assert len(curve) == 2 and "val_mean_dice" in curve[0]


def test_workers_add_the_multi_gpu_override_and_single_processes_do_not(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert with_multi_gpu_config(["train.json"]) == ["train.json"]
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert with_multi_gpu_config(["train.json"]) == ["train.json", MULTI_GPU_TRAIN_CONFIG]


def test_launch_runs_the_pipeline_command_in_the_requested_number_of_workers():
    command = launch_command(3, ["train", "--dataset-dir", "data", "--epochs", "5"])
    assert "--nproc_per_node=3" in command
    assert command[command.index("-m", 2) :] == ["-m", "pipeline", "train", "--dataset-dir", "data", "--epochs", "5"]
    with pytest.raises(ValueError, match="--gpus"):
        launch_command(0, ["train"])


def test_workers_run_the_command_line_without_the_launch_option():
    argv = ["train", "--gpus", "2", "--dataset-dir", "data", "--gpus=4", "--epochs", "5"]
    assert worker_argv(argv) == ["train", "--dataset-dir", "data", "--epochs", "5"]


def test_a_rank_other_than_zero_neither_writes_the_model_definition_nor_removes_rank_zero_s_temporaries(
    tmp_path, monkeypatch
):
    from pipeline.atomic import TEMPORARY_PREFIX
    from pipeline.checkpoints import guard_earlier_run, write_model_config
    from pipeline.networks import UNet2D

    in_flight = tmp_path / f"{TEMPORARY_PREFIX}abcdefgh~model_config.json"  # rank 0 still writing
    in_flight.write_text("{")
    network = UNet2D(in_channels=1, out_channels=2, features=[4, 8, 16, 32, 64])
    monkeypatch.setenv("RANK", "1")
    guard_earlier_run(tmp_path)
    path = write_model_config(tmp_path, "pipeline.networks.UNet2D", network, 64, [0.5, 99.5])
    assert in_flight.exists() and not path.exists()
    monkeypatch.setenv("RANK", "0")
    guard_earlier_run(tmp_path)
    write_model_config(tmp_path, "pipeline.networks.UNet2D", network, 64, [0.5, 99.5])
    assert not in_flight.exists() and path.is_file()
