"""OverlapTileInferer: whole-image segmentation with a valid-padding U-Net, tile by tile."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import Inferer
from PIL import Image

from pipeline import default_bundle_dir
from pipeline.inferers import OverlapTileInferer
from pipeline.inferers.overlap_tile import mirror_pad
from pipeline.networks import UNet2D

MARGIN = 92  # (572 - 388) / 2: the context the valid U-Net consumes on each side


def smallest_valid_side(at_least: int) -> int:
    """The smallest side 16 * k + 60 (k >= 8) that is at least ``at_least``."""
    return 16 * max(8, -(-(at_least - 60) // 16)) + 60


def one_big_tile(network: UNet2D, image: torch.Tensor) -> torch.Tensor:
    """Mirror-pad the image to one valid input (numpy's reflect), run it once and crop the output to H x W."""
    height, width = image.shape[2:]
    pad_h = smallest_valid_side(height + 2 * MARGIN) - height - MARGIN
    pad_w = smallest_valid_side(width + 2 * MARGIN) - width - MARGIN
    padded = np.pad(image.numpy(), ((0, 0), (0, 0), (MARGIN, pad_h), (MARGIN, pad_w)), mode="reflect")
    return network(torch.from_numpy(padded))[:, :, :height, :width]


@pytest.fixture
def valid_unet() -> UNet2D:
    torch.manual_seed(0)
    return UNet2D(features=(4, 8, 16, 32, 64), padding="valid").eval()


def test_overlap_tile_inferer_is_a_monai_inferer():
    assert isinstance(OverlapTileInferer(), Inferer)


@pytest.mark.parametrize(
    ("shape", "sw_batch_size"), [((2, 1, 130, 100), 3), ((1, 1, 150, 120), 4), ((2, 1, 20, 33), 2), ((1, 1, 1, 7), 1)]
)
def test_stitched_output_equals_one_big_mirror_padded_tile(valid_unet, shape, sw_batch_size):
    torch.manual_seed(1)
    image = torch.randn(shape)
    inferer = OverlapTileInferer(tile_size=236, sw_batch_size=sw_batch_size)
    with torch.no_grad():
        stitched = inferer(image, valid_unet)
        expected = one_big_tile(valid_unet, image)
    assert stitched.shape == (shape[0], 2, *shape[2:])
    torch.testing.assert_close(stitched, expected, rtol=1e-5, atol=1e-5)


def test_default_tiles_are_the_papers_572_inputs_and_388_outputs(valid_unet):
    calls: list[tuple[int, ...]] = []

    def recording_network(tiles: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tiles.shape))
        return valid_unet(tiles)

    with torch.no_grad():
        result = OverlapTileInferer(sw_batch_size=4)(torch.randn(1, 1, 512, 500), recording_network)
    assert calls == [(4, 1, 572, 572)]
    assert result.shape == (1, 2, 512, 500)


def test_tile_is_shrunk_for_an_image_smaller_than_one_output_tile(valid_unet):
    calls: list[tuple[int, ...]] = []

    def recording_network(tiles: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tiles.shape[2:]))
        return valid_unet(tiles)

    with torch.no_grad():
        OverlapTileInferer()(torch.randn(1, 1, 30, 100), recording_network)
    # 30 and 100 fit in output tiles of 36 and 100 (388 - 16 * k): inputs 220 and 284.
    assert calls == [(220, 284)]


def test_mirror_pad_matches_numpy_reflect_even_when_wider_than_the_image():
    image = torch.arange(15.0).reshape(1, 1, 3, 5)
    padded = mirror_pad(image, 7, 2, 1, 11)
    expected = np.pad(image.numpy(), ((0, 0), (0, 0), (7, 2), (1, 11)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)


def test_non_4d_input_raises_a_clear_error(valid_unet):
    with pytest.raises(ValueError, match=r"expects a 4D \(N, C, H, W\) tensor, got shape \[1, 64, 64\]"):
        OverlapTileInferer()(torch.randn(1, 64, 64), valid_unet)


def test_network_whose_margin_differs_raises_a_clear_error():
    same_size_network = UNet2D(features=(4, 8, 16, 32, 64), padding="same").eval()
    with pytest.raises(ValueError, match=r"turn a 220x220 tile into 36x36 \(margin 92\), got 220x220"):
        with torch.no_grad():
            OverlapTileInferer()(torch.randn(1, 1, 36, 36), same_size_network)


@pytest.mark.parametrize(
    ("kwargs", "fault"),
    [
        ({"tile_size": 190}, "leaves an output tile of 6"),
        ({"tile_size": (572, 100)}, "leaves an output tile of -84"),
        ({"sw_batch_size": 0}, "sw_batch_size >= 1"),
        ({"margin": -1}, "margin >= 0"),
    ],
)
def test_constructor_rejects_tiles_that_cannot_be_stitched(kwargs, fault):
    with pytest.raises(ValueError, match=fault):
        OverlapTileInferer(**kwargs)


def test_the_valid_padding_config_segments_whole_slices_through_overlap_tiles(tmp_path):
    """``configs/inference_valid_padding.json`` over ``inference.json``, through MONAI's own CLI: the paper's
    network (narrowed here) with the overlap-tile inferer, masks at each slice's own size."""
    features = [4, 8, 16, 32, 64]
    network = UNet2D(in_channels=1, out_channels=2, features=features, norm="batch", padding="valid")
    (tmp_path / "models").mkdir()
    torch.save(network.state_dict(), tmp_path / "models" / "model.pt")
    (tmp_path / "slices").mkdir()
    for name, shape in (("a", (60, 80)), ("b", (300, 200))):
        Image.fromarray((np.random.default_rng(0).random(shape) * 255).astype(np.uint8)).save(
            tmp_path / "slices" / f"{name}.png"
        )
    configs = "['configs/inference.json','configs/inference_valid_padding.json']"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs]
    command += ["--dataset_dir", str(tmp_path / "slices"), "--output_dir", str(tmp_path / "masks")]
    command += ["--ckpt_dir", str(tmp_path / "models"), "--network_def#features", json.dumps(features)]
    command += [
        "--image_size",
        "64",
        "--num_workers",
        "0",
        "--save_overlays",
        "False",
        "--device",
        "$torch.device('cpu')",
    ]
    result = subprocess.run(command, cwd=default_bundle_dir(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name, shape in (("a", (80, 60)), ("b", (200, 300))):  # MONAI reads a PNG as (width, height)
        assert nib.load(tmp_path / "masks" / f"{name}_seg.nii.gz").shape == shape
