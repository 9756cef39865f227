"""The trained model's definition travels with its weights: no stage after training retypes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_bundle import TINY_TRAINING, phantom_dataset

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.checkpoints import MODEL_CONFIG_FILE
from pipeline.data.prepare import prepare_dataset
from pipeline.phantoms.slices import synthesize_dataset

# A training run whose definition differs from every config default: 6-wide U-Net at 48 px, other percentiles.
DEFINITION = {"network_def#features": [6, 12, 24, 48, 96], "image_size": 48, "intensity_percentiles": [1.0, 99.0]}


def _cli(settings: dict) -> list[str]:
    arguments = []
    for key, value in settings.items():
        arguments += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return arguments


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One epoch through `python -m pipeline train` with a non-default network, size and scaling, from a copy of the
    bundle, into a checkpoint folder of its own (no --output_dir)."""
    root = tmp_path_factory.mktemp("model_config")
    phantom_dataset(root, seed=5, patients=8)
    bundle = root / "bundle"
    shutil.copytree(default_bundle_dir(), bundle, ignore=shutil.ignore_patterns("models", "dist", "eval", "runs"))
    settings = {
        **{key: value for key, value in TINY_TRAINING.items() if key != "device"},
        **DEFINITION,
        "ckpt_dir": str(root / "models"),
    }
    arguments = ["train", "--bundle", str(bundle), "--dataset-dir", str(root / "dataset"), "--device", "cpu"]
    assert main([*arguments, *_cli(settings)]) == 0
    slices = root / "slices"
    slices.mkdir()
    for mat in sorted((root / "raw").glob("[0-9]*.mat"))[:3]:
        shutil.copy(mat, slices / mat.name)
    return {"dataset": root / "dataset", "ckpt_dir": root / "models", "root": root, "slices": slices, "bundle": bundle}


def test_training_writes_the_definition_beside_the_weights(trained):
    saved = json.loads((trained["ckpt_dir"] / MODEL_CONFIG_FILE).read_text())
    assert saved["network_def"]["_target_"] == "pipeline.networks.UNet2D"
    assert saved["network_def"]["features"] == DEFINITION["network_def#features"]
    assert saved["image_size"] == DEFINITION["image_size"]
    assert saved["intensity_percentiles"] == DEFINITION["intensity_percentiles"]


def test_training_writes_its_learning_curve_and_tensorboard_log_beside_its_checkpoints(trained):
    assert len((trained["ckpt_dir"] / "learning_curve.csv").read_text().splitlines()) == 2  # the header, epoch 1
    assert list((trained["ckpt_dir"] / "tensorboard").glob("events.out.tfevents.*"))
    assert not (trained["bundle"] / "eval").exists()  # the bundle's folder, shared by every run of it


def test_evaluate_and_infer_rebuild_the_trained_model_without_retyping(trained, capsys):
    ckpt = ["--ckpt_dir", str(trained["ckpt_dir"]), "--num_workers", "0"]
    evaluation = trained["root"] / "evaluation"
    arguments = ["evaluate", "--dataset-dir", str(trained["dataset"]), "--device", "cpu", "--output_dir"]
    assert main([*arguments, str(evaluation), *ckpt]) == 0
    assert json.loads((evaluation / "summary.json").read_text())["overall"]["n"] > 0
    masks = trained["root"] / "masks"
    assert main(["infer", "--input", str(trained["slices"]), "--output", str(masks), "--device", "cpu", *ckpt]) == 0
    assert len(list(masks.glob("*_seg.nii.gz"))) == len(list(trained["slices"].iterdir()))


def test_an_override_contradicting_the_trained_model_is_one_clear_error(trained, tmp_path, capsys):
    arguments = ["infer", "--input", str(trained["slices"]), "--output", str(tmp_path / "masks")]
    arguments += ["--device", "cpu", "--ckpt_dir", str(trained["ckpt_dir"]), "--image_size", "64"]
    assert main(arguments) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "--image_size 64 contradicts the trained model, which has image_size = 48" in error
    assert MODEL_CONFIG_FILE in error
    assert not (tmp_path / "masks").exists() or not any((tmp_path / "masks").iterdir())


def test_a_checkpoint_that_does_not_fit_the_network_names_both_shapes(trained, tmp_path, capsys):
    state = torch.load(trained["ckpt_dir"] / "model.pt", map_location="cpu", weights_only=True)
    torch.save(state, tmp_path / "model.pt")  # the weights without their definition: the config's defaults apply
    arguments = ["infer", "--input", str(trained["slices"]), "--output", str(tmp_path / "masks")]
    arguments += ["--device", "cpu", "--ckpt_dir", str(tmp_path), "--image_size", "48", "--num_workers", "0"]
    classic = json.loads((default_bundle_dir() / "configs" / "common.json").read_text())["network_def"]
    assert main([*arguments, "--network_def", json.dumps(classic)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "has shape [6, 1, 3, 3] in the checkpoint but [64, 1, 3, 3] in the configured network" in error


def test_missing_weights_say_how_to_get_them(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.new("L", (32, 32)).save(tmp_path / "in" / "1.png")
    arguments = ["infer", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*arguments, "--ckpt_dir", str(tmp_path / "empty"), "--num_workers", "0"]) == 1
    error = capsys.readouterr().err
    assert "no trained weights here" in error and "fetch-weights" in error


def test_the_cpu_recipe_trains_on_crops_and_saves_the_whole_slice_definition(tmp_path):
    """`train --recipe cpu` merges train_cpu.json over train.json: crops for training, whole slices after."""
    synthesize_dataset(tmp_path / "raw", patients=7, slices_per_patient=2, size=128, seed=7)
    prepare_dataset(tmp_path / "raw", tmp_path / "dataset", seed=7)
    settings = {
        "epochs": 1,
        "batch_size": 4,
        "progress_bar": False,
        "image_size": 32,
        "crop_size": 16,
        "val_interval": 1,
        "network_def#features": [4, 8, 16, 32, 64],
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "training"),
    }
    arguments = ["train", "--dataset-dir", str(tmp_path / "dataset"), "--recipe", "cpu", "--device", "cpu"]
    assert main([*arguments, *_cli(settings)]) == 0
    saved = json.loads((tmp_path / "models" / MODEL_CONFIG_FILE).read_text())
    assert saved["image_size"] == 32 and saved["network_def"]["features"] == [4, 8, 16, 32, 64]
    header, epoch = (tmp_path / "training" / "learning_curve.csv").read_text().splitlines()
    assert float(dict(zip(header.split(","), epoch.split(",")))["val_mean_dice"]) >= 0.0


def test_an_unknown_recipe_is_one_line_naming_the_known_ones(tmp_path, capsys):
    assert main(["train", "--dataset-dir", str(tmp_path), "--recipe", "fast", "--device", "cpu"]) == 1
    error = capsys.readouterr().err.strip()
    known = sorted(path.stem.removeprefix("train_") for path in (default_bundle_dir() / "configs").glob("train_*.json"))
    assert "cpu" in known
    assert error.endswith(f"train_fast.json: no such recipe; the bundle has: {', '.join(known)}") and "\n" not in error
    assert not any(tmp_path.iterdir())


def test_recipes_compose_with_plus_and_an_unknown_part_is_named(tmp_path, capsys):
    from pipeline.commands.train import train_configs

    assert train_configs("cpu+augment") == ["train.json", "train_cpu.json", "train_augment.json"]
    assert main(["train", "--dataset-dir", str(tmp_path), "--recipe", "cpu+fast", "--device", "cpu"]) == 1
    assert "train_fast.json: no such recipe" in capsys.readouterr().err
