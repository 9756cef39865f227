"""`python -m pipeline check`: the bundle passes model-zoo's checks, and each kind of fault fails it by name."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from pipeline import BUNDLE_NAME, default_bundle_dir
from pipeline.__main__ import main
from pipeline.bundle_configs import write_standalone_inference
from pipeline.export.package import archive_name, unsafe_entries, write_checksum
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


def save_scripted(network: torch.nn.Module, path: Path, version: str) -> None:
    """``network`` as TorchScript with the metadata version embedded, as export writes it."""
    path.parent.mkdir(exist_ok=True)
    metadata = json.dumps({"version": version})
    torch.jit.save(torch.jit.script(network), str(path), _extra_files={"metadata.json": metadata})


def test_check_fails_a_torchscript_model_that_is_not_the_weights_beside_it(bundle, capsys):
    weights, scripted = bundle / "models" / "model.pt", bundle / "models" / "model.ts"
    (bundle / "large_files.yml").unlink()  # it lists the shipped weights, not these
    trained = UNet2D(features=[4, 8, 16, 32, 64], norm="batch")
    save_scripted(UNet2D(features=[4, 8, 16, 32, 64], norm="batch"), scripted, version_of(bundle))  # other weights
    torch.save(trained.state_dict(), weights)
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and len(failures) == 1
    assert failures[0].startswith(f"FAIL {scripted}: is not {weights} (outputs on a probe input differ by up to ")
    save_scripted(trained.eval(), scripted, version_of(bundle))
    assert run_check(capsys, bundle)[0] == 0


def write_archive(bundle: Path, names: Sequence[str], content: bytes = b"x") -> Path:
    """This version's zip in ``bundle/dist`` holding ``names``, with its checksum."""
    archive = bundle / "dist" / archive_name(BUNDLE_NAME, version_of(bundle))
    archive.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(archive, "w") as packed:
        for name in names:
            packed.writestr(name, content)
    write_checksum(archive)
    return archive


def test_check_detects_an_archive_changed_after_its_checksum_was_written(bundle, capsys):
    archive = write_archive(bundle, [f"{BUNDLE_NAME}/LICENSE"])
    assert run_check(capsys, bundle)[0] == 0
    with zipfile.ZipFile(archive, "a") as packed:
        packed.writestr(f"{BUNDLE_NAME}/extra.txt", b"added after export")
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and failures == [
        f"FAIL {archive}: SHA-256 differs from {archive.name}.sha256; the archive changed after export"
    ]


def test_check_refuses_an_archive_whose_entries_unpack_outside_its_folder_whatever_its_checksum(bundle, capsys):
    archive = write_archive(bundle, [f"{BUNDLE_NAME}/LICENSE", "../outside.txt"])  # the checksum matches the archive
    code, failures, _ = run_check(capsys, bundle)
    assert code == 1 and failures == [
        f"FAIL {archive}: refused: 1 entries would unpack outside its folder (absolute or with '..'), first "
        "'../outside.txt'; whatever its checksum says, do not unpack it"
    ]


def test_absolute_entries_and_entries_with_a_parent_part_are_unsafe_and_no_others(tmp_path):
    unsafe = ["/etc/cron.d/x", "C:/x.txt", "c:x.txt", "\\\\host\\share\\x", "../x", "a/../../x", "a\\..\\x"]
    safe = [f"{BUNDLE_NAME}/LICENSE", "a/b..c", "a/..b/c", "a/b/"]
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w") as packed:
        for name in unsafe + safe:
            packed.writestr(name, b"x")
    assert unsafe_entries(tmp_path / "bundle.zip") == unsafe


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
        line for line in failures if line.startswith(f"FAIL {weights}: not a complete PyTorch checkpoint")
    ]
