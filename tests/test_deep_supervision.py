"""Deep supervision trains extra heads on the decoder's coarser levels; the network and its weights stay classic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from tiny_bundle import TINY_NETWORK, TINY_TRAINING, phantom_dataset

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.bundle_configs import bundle_parser
from pipeline.checkpoints import load_checkpoint, read_model_config
from pipeline.commands.train import train_configs
from pipeline.networks import DeepSupervision, UNet2D
from pipeline.training.crossval import FoldPaths, extract_final_model

RECIPE = "cpu+deep_supervision"
FEATURES = TINY_NETWORK["network_def#features"]
EPOCHS = 2


def test_in_training_heads_add_coarser_logits_and_in_evaluation_only_the_network_runs():
    network = UNet2D(features=FEATURES, norm="batch")
    keys = set(network.state_dict())
    supervised = DeepSupervision(network, levels=2)
    image = torch.rand(2, 1, 32, 32)
    outputs = supervised.train()(image)
    assert [tuple(output.shape) for output in outputs] == [(2, 2, 32, 32), (2, 2, 16, 16), (2, 2, 8, 8)]
    assert torch.equal(outputs[0], network(image))
    supervised.eval()
    assert torch.equal(supervised(image), network(image))
    assert set(network.state_dict()) == keys


def test_the_recipes_training_loss_adds_each_coarser_level_at_half_the_weight_of_the_level_above():
    overrides = {"device": "$torch.device('cpu')", **TINY_NETWORK}
    parser = bundle_parser(default_bundle_dir(), train_configs(RECIPE), overrides)
    network = parser.get_parsed_content("train#trainer#network")
    loss_function = parser.get_parsed_content("train#trainer#loss_function")
    dice_ce = parser.get_parsed_content("loss")
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 32, 32, generator=generator)
    label = (torch.rand(2, 1, 32, 32, generator=generator) > 0.7).float()
    with torch.no_grad():
        outputs = network.train()(image)
        total = loss_function(outputs, label)
        levels = [dice_ce(output, F.interpolate(label, output.shape[2:], mode="nearest-exact")) for output in outputs]
    auxiliary = 0.5 * levels[1] + 0.25 * levels[2]
    assert total == pytest.approx(float(levels[0] + auxiliary), rel=1e-5)
    assert auxiliary > 0.1 * levels[0]


def _train(dataset: Path, ckpt_dir: Path, *arguments: str, **settings) -> None:
    command = ["train", "--dataset-dir", str(dataset), "--recipe", RECIPE, "--device", "cpu", *arguments]
    command += ["--ckpt_dir", str(ckpt_dir), "--output_dir", str(ckpt_dir.parent / "training")]
    tiny = {key: value for key, value in TINY_TRAINING.items() if key != "device"}
    # Whole 32 px slices without augmentation: the interrupted and the uninterrupted run then see the same batches.
    tiny.update(epochs=EPOCHS, batch_size=2, val_interval=1, **{"train#random_transforms": []}, **settings)
    for key, value in tiny.items():
        command += [f"--{key}", json.dumps(value)]
    assert main(command) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two epochs of the recipe in a cross-validation fold's folder (keeping epoch 1's latest checkpoint too), and
    a run resumed from that epoch-1 checkpoint, as if the first had been stopped there."""
    root = tmp_path_factory.mktemp("deep_supervision")
    dataset = phantom_dataset(root, seed=5)
    fold = FoldPaths(root / "cv", 4)
    _train(dataset, fold.checkpoints, **{"latest_checkpoint#n_saved": EPOCHS})
    resumed = root / "resumed" / "models"
    resumed.mkdir(parents=True)
    shutil.copy(fold.checkpoints / "latest_checkpoint_epoch=1.pt", resumed)
    _train(dataset, resumed, "--resume")
    return {"fold": fold, "resumed": resumed}


def _latest(ckpt_dir: Path, epoch: int) -> dict:
    return load_checkpoint(ckpt_dir / f"latest_checkpoint_epoch={epoch}.pt")


def test_the_heads_learn_and_an_interrupted_run_resumes_exactly_with_them(runs):
    first, last = _latest(runs["fold"].checkpoints, 1), _latest(runs["fold"].checkpoints, EPOCHS)
    resumed = _latest(runs["resumed"], EPOCHS)
    heads = last["deep_supervision_heads"]
    assert heads and not any(torch.equal(first["deep_supervision_heads"][name], heads[name]) for name in heads)
    for part in ("model", "deep_supervision_heads"):
        assert all(torch.equal(resumed[part][name], tensor) for name, tensor in last[part].items()), part


def test_the_saved_and_the_crossval_final_model_load_into_a_plain_unet_with_strict_keys(runs):
    fold = runs["fold"]
    extract_final_model(fold)
    for folder in (fold.checkpoints, fold.model_dir):
        definition = read_model_config(folder)["network_def"]
        assert definition["_target_"] == "pipeline.networks.UNet2D" and definition["features"] == FEATURES
        network = ConfigParser({"network_def": definition}).get_parsed_content("network_def")
        state = load_checkpoint(folder / "model.pt")
        network.load_state_dict(state.get("model", state), strict=True)
