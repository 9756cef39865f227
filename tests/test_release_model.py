"""The release model shipped in the bundle: it fits its configuration and segments real slices out of the box."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.checkpoints import MODEL_CONFIG_FILE, read_model_config
from pipeline.export.checks import large_files_problems, loaded_network
from pipeline.export.large_files import read_large_files

BUNDLE = default_bundle_dir()
MODELS = BUNDLE / "models"


def test_the_release_model_loads_into_the_shipped_configuration():
    model_config = read_model_config(MODELS)
    assert model_config is not None, f"{MODELS / MODEL_CONFIG_FILE} is missing"
    network = loaded_network(BUNDLE, model_config, MODELS / "model.pt")  # refuses weights that do not fit
    assert not network.training


def test_large_files_lists_the_release_weights_with_their_sha256():
    listed = {entry["path"]: entry for entry in read_large_files(BUNDLE)}
    assert listed["models/model.pt"]["hash_type"] == "sha256"
    assert large_files_problems(BUNDLE) == []
    assert (MODELS / "model.pt").stat().st_size <= 40 * 2**20


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    overlap = np.logical_and(prediction, truth).sum()
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else 2.0 * overlap / total


def test_infer_with_the_release_model_segments_full_resolution_slices(figshare_sample: Path, tmp_path: Path):
    """`python -m pipeline infer` on a fresh clone: no training, no retyped settings, 512x512 slices in."""
    output = tmp_path / "masks"
    arguments = ["infer", "--input", str(figshare_sample / "images"), "--output", str(output)]
    assert main([*arguments, "--format", "png", "--no-overlays", "--device", "cpu"]) == 0
    rows = list(csv.DictReader((figshare_sample / "meta.csv").open()))
    scores = []
    for row in rows:
        truth = np.asarray(Image.open(figshare_sample / "masks" / f"{row['index']}.png")) > 0
        prediction = np.asarray(Image.open(output / f"{row['index']}_seg.png")) > 0
        assert prediction.shape == truth.shape, row["index"]
        scores.append(_dice(prediction, truth))
    assert len(scores) == len(rows) > 100
    assert float(np.mean(scores)) >= 0.70, f"mean Dice {np.mean(scores):.3f} on {len(scores)} slices"
