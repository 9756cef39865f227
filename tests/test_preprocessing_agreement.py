"""Training, evaluation and inference must show the network the same tensor for the same file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose
from PIL import Image

from pipeline import default_bundle_dir
from pipeline.bundle_configs import bundle_parser

CONFIGS = default_bundle_dir() / "configs"


def _parser(*config_names: str) -> ConfigParser:
    return bundle_parser(default_bundle_dir(), config_names, {"device": "$torch.device('cpu')"})


@pytest.fixture
def slice_pair(tmp_path) -> dict[str, str]:
    """A non-square 8-bit slice (so that the resize matters) and its 0/255 mask, as the PNG conversion has them."""
    rng = np.random.default_rng(0)
    image = (rng.random((300, 220)) * 255).astype(np.uint8)
    mask = np.zeros((300, 220), dtype=np.uint8)
    mask[100:160, 80:150] = 255
    Image.fromarray(image).save(tmp_path / "1.png")
    Image.fromarray(mask).save(tmp_path / "1_mask.png")
    return {"image": str(tmp_path / "1.png"), "label": str(tmp_path / "1_mask.png")}


@pytest.mark.parametrize("image_size", [256, 160])
def test_train_evaluate_and_inference_preprocess_a_file_to_the_same_tensor(slice_pair, image_size):
    train = _parser("train.json")
    evaluate = _parser("train.json", "evaluate.json")
    inference = _parser("inference.json")
    for parser in (train, evaluate, inference):
        parser["image_size"] = image_size
    tensors = {
        "train": Compose(train.get_parsed_content("train#deterministic_transforms"))(dict(slice_pair))["image"],
        "evaluate": evaluate.get_parsed_content("validate#preprocessing")(dict(slice_pair))["image"],
        "inference": inference.get_parsed_content("preprocessing")({"image": slice_pair["image"]})["image"],
    }
    assert tensors["train"].shape == (1, image_size, image_size)
    for stage in ("evaluate", "inference"):
        assert tensors[stage].dtype == tensors["train"].dtype, stage
        assert torch.equal(torch.as_tensor(tensors[stage]), torch.as_tensor(tensors["train"])), stage


# Written once in configs/common.json; a stage config may override one only where it must differ.
SHARED_FACTS = {
    "device", "amp", "amp_dtype", "image_size", "intensity_percentiles", "network_def",
    "slice_transforms", "flip_tta", "threshold", "keep_largest_component", "fill_holes", "mask_transforms",
}  # fmt: skip
NEEDED_OVERRIDES = {
    "inference_torchscript.json": {"network_def"},  # the exported TorchScript model, not the Python class
    "multi_gpu_train.json": {"device"},  # each worker's own GPU
    "multi_gpu_evaluate.json": {"device"},
    "train_cpu.json": {"image_size"},  # the recipe's training resolution
    "inference_valid_padding.json": {"network_def"},  # the paper's valid-padding network, tiled
}


def test_facts_every_stage_shares_are_written_only_in_common_json():
    for path in sorted(CONFIGS.glob("*.json")):
        if path.name in ("common.json", "metadata.json", "inference.json"):
            continue  # inference.json stands alone: tests/test_model_zoo.py holds it to common.json's values
        redeclared = set(json.loads(path.read_text())) & SHARED_FACTS
        assert redeclared <= NEEDED_OVERRIDES.get(path.name, set()), f"{path.name} re-declares {sorted(redeclared)}"


def test_every_stage_autocasts_with_the_common_amp_rule():
    assert _parser("train.json")["train#trainer#amp_kwargs"] == {"dtype": "@amp_dtype"}
    assert _parser("train.json")["validate#evaluator#amp_kwargs"] == {"dtype": "@amp_dtype"}
    for config in ("inference.json", "inference_torchscript.json"):
        assert _parser(config)["evaluator#amp_kwargs"] == {"dtype": "@amp_dtype"}, config
