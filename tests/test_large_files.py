"""``fetch-weights``: the weights of ``large_files.yml`` land inside the bundle, staged beside their place, bounded,
and never read from a pipe or a device."""

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main
from pipeline.export import BundleExportError, fetch_large_files, large_files

WEIGHTS = b"weights " * 512


def write_listing(bundle: Path, url: str, path: str = "models/model.pt", data: bytes = WEIGHTS) -> None:
    entry = {"path": path, "url": url, "hash_val": hashlib.sha256(data).hexdigest(), "hash_type": "sha256"}
    (bundle / "large_files.yml").write_text(yaml.safe_dump({"large_files": [entry]}))


@pytest.fixture
def hosted(tmp_path) -> Path:
    """A folder outside the bundle holding the weights under the name the listing gives them."""
    folder = tmp_path / "hosted"
    folder.mkdir()
    (folder / "model.pt").write_bytes(WEIGHTS)
    return folder


@pytest.fixture
def bundle(tmp_path, hosted) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    write_listing(folder, (hosted / "model.pt").as_uri())
    return folder


def test_weights_are_fetched_inside_the_bundle_without_the_temporary_folder(bundle, tmp_path, monkeypatch):
    # A temporary folder that does not exist: a download staged there (MONAI's download_url) fails.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-temporary-folder"))
    assert fetch_large_files(bundle) == [bundle / "models" / "model.pt"]
    assert (bundle / "models" / "model.pt").read_bytes() == WEIGHTS
    assert sorted(path.name for path in (bundle / "models").iterdir()) == ["model.pt"]


def test_weights_with_another_hash_leave_nothing_in_the_bundle(bundle, hosted):
    (hosted / "model.pt").write_bytes(b"other weights")
    with pytest.raises(BundleExportError, match=r"model\.pt: sha256 differs from large_files\.yml"):
        fetch_large_files(bundle)
    assert not any((bundle / "models").iterdir())


def test_a_models_folder_that_is_a_link_is_refused_and_nothing_lands_outside_the_bundle(bundle, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (bundle / "models").symlink_to(outside)
    assert main(["fetch-weights", "--bundle", str(bundle)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {bundle / 'models'}: refused: this output folder is a link")
    assert len(error.splitlines()) == 1
    assert not any(outside.iterdir())


def test_weights_larger_than_the_bound_are_refused_in_one_line(bundle, monkeypatch):
    monkeypatch.setattr(large_files, "MAX_WEIGHTS_BYTES", 1024)
    with pytest.raises(
        BundleExportError, match=f"^file://.*model\\.pt: {len(WEIGHTS)} bytes, more than the 1024 bytes"
    ):
        fetch_large_files(bundle)
    assert not any((bundle / "models").iterdir())


@pytest.mark.parametrize("kind", ["pipe", "device"])
def test_a_file_url_naming_no_regular_file_is_refused_before_reading(bundle, hosted, kind, bounded_child):
    source = hosted / "model.pt"
    source.unlink()
    if kind == "pipe":
        os.mkfifo(source)
    else:
        source.symlink_to("/dev/zero")
    command = [sys.executable, "-m", "pipeline", "fetch-weights", "--bundle", str(bundle)]
    # In a child with a deadline and a file size limit: before the check, a pipe blocked for ever and /dev/zero
    # was written into the temporary folder without end.
    result = bounded_child(command)
    expected = "a named pipe" if kind == "pipe" else "a character device"
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: {source.as_uri()}: not a regular file ({expected}); refused before reading it"
    )
    assert not (bundle / "models").exists() or not any((bundle / "models").iterdir())
