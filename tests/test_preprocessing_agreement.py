"""Training, evaluation and inference must show the network the same tensor for the same file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose
from PIL import Image

from pipeline import default_bundle_dir

CONFIGS = default_bundle_dir() / "configs"


def _parser(*config_names: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in config_names])
    parser.update({"bundle_root": str(default_bundle_dir()), "device": "$torch.device('cpu')"})
    return parser


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


def test_the_network_definition_is_the_same_in_training_and_inference():
    assert _parser("train.json")["network_def"] == _parser("inference.json")["network_def"]
    assert _parser("train.json")["intensity_percentiles"] == _parser("inference.json")["intensity_percentiles"]


def test_every_stage_autocasts_with_the_training_dtype():
    rule = _parser("train.json").get()["amp_dtype"]
    assert _parser("train.json")["train#trainer#amp_kwargs"] == {"dtype": "@amp_dtype"}
    for config in ("inference.json", "inference_torchscript.json"):
        parser = _parser(config)
        assert parser.get()["amp_dtype"] == rule, config
        assert parser["evaluator#amp_kwargs"] == {"dtype": "@amp_dtype"}, config
