"""A training can start from trained weights (fine-tuning): a model.pt, or one fold member of the shipped ensemble."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_bundle import TINY_TRAINING, train_tiny

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.checkpoints import MODEL_CONFIG_FILE, load_checkpoint
from pipeline.networks.ensemble import member_state

BUNDLE = default_bundle_dir()
SHIPPED = BUNDLE / "models" / "model.pt"
# Trains nothing: with a learning rate of 0 the weights after an epoch are those the training started from.
FROZEN = {**{key: value for key, value in TINY_TRAINING.items() if key != "device"}, "learning_rate": 0.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A root with phantoms prepared in ``dataset`` and a tiny model trained for one epoch in ``models``."""
    root = tmp_path_factory.mktemp("fine_tuning")
    train_tiny(root, seed=11)
    return root


def _train(dataset: Path, run: Path, *arguments: str, **settings) -> list[str]:
    command = ["train", "--dataset-dir", str(dataset), "--device", "cpu", *arguments]
    command += ["--ckpt_dir", str(run / "models"), "--output_dir", str(run / "training")]
    for key, value in {**FROZEN, **settings}.items():
        command += [f"--{key}", json.dumps(value)]
    return command


def _parameters(state: dict[str, torch.Tensor], network_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The learnable weights of ``state`` (not the normalisation statistics an epoch in training mode updates)."""
    return {name: state[name] for name in network_state if "running_" not in name and "num_batches" not in name}


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    (latest,) = (run / "models").glob("latest_checkpoint_*.pt")
    return load_checkpoint(latest)["model"]


def test_training_with_init_from_starts_from_the_given_model(trained, tmp_path):
    start = load_checkpoint(trained / "models" / "model.pt")
    run = tmp_path / "run"
    assert main(_train(trained / "dataset", run, "--init-from", str(trained / "models" / "model.pt"))) == 0
    final = _final_weights(run)
    expected = _parameters(start, final)
    assert expected and all(torch.equal(final[name], tensor) for name, tensor in expected.items())


def test_monai_bundle_run_with_init_from_starts_from_the_chosen_fold_member_of_the_shipped_model(trained, tmp_path):
    configs = "['configs/common.json','configs/train.json','configs/train_cpu.json']"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs]
    command += ["--init_from", "models/model.pt", "--init_fold", "3", "--dataset_dir", str(trained / "dataset")]
    command += ["--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "training")]
    settings = {
        **FROZEN,
        "device": "$torch.device('cpu')",
        "crop_size": 16,
        "network_def#features": [16, 32, 64, 128, 256],
    }
    for key, value in settings.items():
        command += [f"--{key}", value if isinstance(value, str) else repr(value)]
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folds = json.loads((BUNDLE / "models" / MODEL_CONFIG_FILE).read_text())["network_def"]["folds"]
    member = member_state(load_checkpoint(SHIPPED), folds.index(3))
    final = _final_weights(tmp_path)
    assert all(torch.equal(final[name], tensor) for name, tensor in _parameters(member, final).items())


def _error_line(capsys) -> str:
    (line,) = capsys.readouterr().err.splitlines()
    return line


def test_weights_that_do_not_fit_the_network_are_refused_in_one_line_naming_the_file_and_the_first_key(
    trained, tmp_path, capsys
):
    weights = trained / "models" / "model.pt"
    arguments = _train(trained / "dataset", tmp_path, "--init-from", str(weights))
    assert main([*arguments, "--network_def#features", "[8, 16, 32, 64, 128]"]) == 1
    line = _error_line(capsys)
    assert line.startswith(f"error: {weights}: does not fit the configured network: 'encoder.0.")
    assert "has shape [4, 1, 3, 3] in the checkpoint but [8, 1, 3, 3] in the configured network" in line
    assert not list((tmp_path / "models").glob("*.pt")) and not (tmp_path / "models" / MODEL_CONFIG_FILE).exists()


def test_the_shipped_ensemble_needs_a_fold_to_start_from(trained, tmp_path, capsys):
    assert main(_train(trained / "dataset", tmp_path, "--init-from", "bundle")) == 1
    line = _error_line(capsys)
    assert line.startswith(f"error: {SHIPPED}: a fold ensemble of folds 1, 2, 3, 4") and "--init-fold K" in line
    assert main(_train(trained / "dataset", tmp_path, "--init-from", "bundle", "--init-fold", "7")) == 1
    assert "it holds no fold 7" in _error_line(capsys)


def test_a_fold_without_init_from_or_of_a_single_network_is_refused(trained, tmp_path, capsys):
    assert main(_train(trained / "dataset", tmp_path, "--init-fold", "2")) == 1
    assert _error_line(capsys) == "error: --init-fold 2: needs --init-from (bundle, or the fold ensemble's model.pt)"
    weights = trained / "models" / "model.pt"
    assert main(_train(trained / "dataset", tmp_path, "--init-from", str(weights), "--init-fold", "2")) == 1
    assert _error_line(capsys).startswith(f"error: init_fold 2: {weights} holds one network, not a fold ensemble")
