"""The repository's bundle stands up to model-zoo's own verification, with ``configs/inference.json`` alone."""

from __future__ import annotations

import json

import pytest

from pipeline import DEFAULT_SCHEMA, default_bundle_dir
from pipeline.bundle_configs import COMMON_CONFIG, standalone_inference
from pipeline.export.zoo_verification import ZooCheckError, verify_like_model_zoo

BUNDLE = default_bundle_dir()


def test_the_repository_bundle_passes_model_zoo_verification_in_full():
    lines = verify_like_model_zoo(BUNDLE, DEFAULT_SCHEMA)
    assert lines[-3:] == [
        "data shape is verified correctly.",
        "export weights into TorchScript module successfully.",
        "inference properties are verified correctly.",
    ]


def test_inference_json_is_common_json_and_the_shipped_model_written_out_whole():
    written = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    assert written == standalone_inference(BUNDLE), (
        "configs/inference.json is out of step with common.json or models/model_config.json: run "
        "`python -m pipeline check --write-inference-config`"
    )


def test_a_shared_fact_edited_in_common_json_only_is_caught(tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    shutil.copytree(BUNDLE / "models", bundle / "models")
    common = json.loads((bundle / "configs" / COMMON_CONFIG).read_text())
    common["threshold"] = 0.4
    (bundle / "configs" / COMMON_CONFIG).write_text(json.dumps(common))
    written = json.loads((bundle / "configs" / "inference.json").read_text())
    assert written != standalone_inference(bundle)
    assert standalone_inference(bundle)["threshold"] == 0.4


def test_a_bundle_whose_weights_do_not_match_their_hash_fails_the_directory_check(tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("eval", "dist", "runs"))
    with open(bundle / "models" / "model.pt", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ZooCheckError, match="not matching its sha256"):
        verify_like_model_zoo(bundle, DEFAULT_SCHEMA)
