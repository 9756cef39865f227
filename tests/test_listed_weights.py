"""Weights that differ from the hash the bundle's large_files.yml lists for them: one warning line, or a refusal."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK, phantom_dataset, save_threshold_network

from pipeline import BUNDLE_NAME, default_bundle_dir
from pipeline.__main__ import main
from pipeline.bundle_configs import write_standalone_inference

LISTED = "0" * 64
NETWORK = ["--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A copy of the bundle whose large_files.yml lists a hash its models/model.pt does not have."""
    copy = tmp_path / BUNDLE_NAME
    shutil.copytree(default_bundle_dir(), copy, ignore=shutil.ignore_patterns("models", "dist", "eval", "runs"))
    write_standalone_inference(copy)  # without the shipped model, inference.json holds common.json's network
    (copy / "models").mkdir()
    save_threshold_network(copy / "models" / "model.pt")
    entry = {"path": "models/model.pt", "url": "", "hash_val": LISTED, "hash_type": "sha256"}
    (copy / "large_files.yml").write_text(json.dumps({"large_files": [entry]}))
    return copy


def _infer(bundle: Path, tmp_path: Path, *extra: str) -> int:
    (tmp_path / "inputs").mkdir(exist_ok=True)
    Image.fromarray(np.full((40, 48), 200, dtype=np.uint8)).save(tmp_path / "inputs" / "1.png")
    arguments = ["infer", "--bundle", str(bundle), "--input", str(tmp_path / "inputs"), "--device", "cpu"]
    return main([*arguments, "--output", str(tmp_path / "masks"), "--num_workers", "0", *NETWORK, *extra])


def _actual(bundle: Path) -> str:
    return hashlib.sha256((bundle / "models" / "model.pt").read_bytes()).hexdigest()


def _mismatch(bundle: Path) -> str:
    weights, listing = bundle / "models" / "model.pt", bundle / "large_files.yml"
    return f"{weights}: sha256 {_actual(bundle)} differs from {LISTED}, which {listing}"


def test_infer_with_weights_other_than_the_listed_ones_warns_in_one_line_naming_both_hashes(bundle, tmp_path, capsys):
    assert _infer(bundle, tmp_path) == 0
    captured = capsys.readouterr()
    warnings = [line for line in (captured.out + captured.err).splitlines() if "differs from" in line]
    assert len(warnings) == 1 and _mismatch(bundle) in warnings[0] and "WARNING" in warnings[0]
    assert (tmp_path / "masks" / "1_seg.nii.gz").is_file()


@pytest.mark.parametrize("strict", [["--strict-weights"], ["--strict_weights", "true"]])
def test_infer_refuses_them_under_strict_weights_before_any_output(strict, bundle, tmp_path, capsys):
    assert _infer(bundle, tmp_path, *strict) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {_mismatch(bundle)}") and "refused (strict_weights)" in line
    assert not list((tmp_path / "masks").glob("*_seg.*"))


def test_listed_weights_that_match_run_without_a_word(bundle, tmp_path, capsys):
    entry = {"path": "models/model.pt", "url": "", "hash_val": _actual(bundle), "hash_type": "sha256"}
    (bundle / "large_files.yml").write_text(json.dumps({"large_files": [entry]}))
    assert _infer(bundle, tmp_path, "--strict-weights") == 0
    assert "differs from" not in capsys.readouterr().out


def test_evaluate_warns_and_under_strict_weights_refuses_them(bundle, tmp_path, capsys):
    dataset = phantom_dataset(tmp_path, seed=7)
    arguments = ["evaluate", "--bundle", str(bundle), "--dataset-dir", str(dataset), "--device", "cpu", *NETWORK]
    arguments += ["--output_dir", str(tmp_path / "scores"), "--num_workers", "0"]
    assert main([*arguments, "--strict-weights"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {_mismatch(bundle)}")
    assert not (tmp_path / "scores").exists()
    assert main(arguments) == 0
    captured = capsys.readouterr()
    assert len([line for line in captured.out.splitlines() if _mismatch(bundle) in line]) == 1
    assert (tmp_path / "scores" / "summary.json").is_file()
