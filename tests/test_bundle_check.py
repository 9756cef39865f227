"""`python -m pipeline check`: the bundle passes model-zoo's checks, and each kind of fault fails it by name."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from pipeline import BUNDLE_NAME, default_bundle_dir
from pipeline.__main__ import main
from pipeline.bundle_configs import write_standalone_inference
from pipeline.export.package import archive_name, write_checksum
from pipeline.networks import UNet2D

# The network check builds network_def; a narrow one keeps it fast and checks the same wiring.
TINY = ["--network_def#features", "[4,8,16,32,64]"]


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A copy of the repository's bundle (configs, docs, licence) to break."""
    copy = tmp_path / BUNDLE_NAME
    shutil.copytree(default_bundle_dir(), copy, ignore=shutil.ignore_patterns("models", "dist", "eval", "runs"))
    write_standalone_inference(copy)  # without the shipped model, inference.json holds common.json's network
    return copy


def run_check(capsys, bundle: Path, *extra: str, network: Sequence[str] = TINY) -> tuple[int, list[str], str]:
    """Exit code, the FAIL lines and everything printed to stderr."""
    code = main(["check", "--bundle", str(bundle), *extra, *network])
    stderr = capsys.readouterr().err
    return code, [line for line in stderr.splitlines() if line.startswith("FAIL ")], stderr


def edit_metadata(bundle: Path, **changes) -> Path:
    meta_file = bundle / "configs" / "metadata.json"
    metadata = json.loads(meta_file.read_text())
    metadata.update(changes)
    meta_file.write_text(json.dumps(metadata, indent=4))
    return meta_file


def version_of(bundle: Path) -> str:
    return json.loads((bundle / "configs" / "metadata.json").read_text())["version"]


def test_repository_bundle_passes_the_bundle_check(capsys):
    """The shipped bundle, with the release model and the network its model_config.json defines."""
    code, failures, _ = run_check(capsys, default_bundle_dir(), network=())
    assert failures == [] and code == 0


def test_check_names_a_missing_licence(bundle, capsys):
    (bundle / "LICENSE").unlink()
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and failures == [f"FAIL {bundle / 'LICENSE'}: required bundle file is missing"]


def test_check_names_metadata_that_fails_the_schema(bundle, capsys):
    meta_file = edit_metadata(bundle, task=["not", "a", "string"])
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and len(failures) == 1
    assert failures[0].startswith(f"FAIL {meta_file}: does not match MONAI's metadata schema") and "task" in failures[0]


def test_check_names_metadata_that_is_not_json(bundle, capsys):
    meta_file = bundle / "configs" / "metadata.json"
    meta_file.write_text('{"version": "0.1.0",')
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and len(failures) == 1 and failures[0].startswith(f"FAIL {meta_file}: cannot be read as JSON")


def test_check_requires_a_changelog_entry_for_the_current_version(bundle, capsys):
    meta_file = edit_metadata(bundle, version="9.9.9")
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and failures == [
        f"FAIL {meta_file}: version '9.9.9' has no changelog entry; describe what changed in it"
    ]


def test_check_fails_when_the_schema_it_is_given_does_not_exist(bundle, tmp_path, capsys):
    code, _, stderr = run_check(capsys, bundle, "--schema", str(tmp_path / "absent.json"))
    assert code == 1
    assert stderr.splitlines() == [
        f"error: {tmp_path / 'absent.json'}: no such schema file; pass MONAI's metadata schema with --schema"
    ]


def test_check_rejects_a_torchscript_model_exported_from_another_version(bundle, capsys):
    scripted = torch.jit.script(UNet2D(features=[4, 8, 16, 32, 64]))
    (bundle / "models").mkdir()
    torch.jit.save(
        scripted, str(bundle / "models" / "model.ts"), _extra_files={"metadata.json": '{"version": "0.0.1"}'}
    )
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and len(failures) == 1
    assert failures[0].startswith(f"FAIL {bundle / 'models' / 'model.ts'}: exported from version '0.0.1'")


def test_check_detects_an_archive_changed_after_its_checksum_was_written(bundle, capsys):
    archive = bundle / "dist" / archive_name(BUNDLE_NAME, version_of(bundle))
    archive.parent.mkdir()
    archive.write_bytes(b"zip bytes")
    write_checksum(archive)
    assert run_check(capsys, bundle)[0] == 0
    archive.write_bytes(b"zip bytes, altered")
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and failures == [
        f"FAIL {archive}: SHA-256 differs from {archive.name}.sha256; the archive changed after export"
    ]


def test_check_detects_weights_that_differ_from_large_files(bundle, capsys):
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"other weights")
    entry = {"path": "models/model.pt", "url": "file:///nowhere/model.pt", "hash_val": "0" * 64, "hash_type": "sha256"}
    (bundle / "large_files.yml").write_text(json.dumps({"large_files": [entry]}))
    code, failures, _ = run_check(capsys, bundle)
    weights = bundle / "models" / "model.pt"
    assert code == 1 and f"FAIL {weights}: sha256 differs from large_files.yml" in failures
    # The bytes are no checkpoint at all, which loading them into the network also reports.
    assert [line for line in failures if "sha256" not in line] == [
        line for line in failures if line.startswith(f"FAIL {weights}: not a PyTorch checkpoint")
    ]
