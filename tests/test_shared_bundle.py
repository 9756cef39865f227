"""The exported zip on its own: in a fresh virtualenv holding only what its metadata names plus the wheel it carries,
``python -m monai.bundle run`` trains, evaluates and segments, with the repository off ``sys.path``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImage
from PIL import Image
from tiny_bundle import TINY_NETWORK, TINY_TRAINING, train_tiny

from pipeline import BUNDLE_NAME, DEFAULT_SCHEMA, default_bundle_dir
from pipeline.bundle_configs import write_standalone_inference
from pipeline.data.figshare import read_figshare_slice
from pipeline.export import BundleExportError, export_bundle
from pipeline.export.requirements import pinned_requirements
from pipeline.export.wheel import build_wheel

REPOSITORY = Path(__file__).resolve().parents[1]
# Export writes the tiny network's shapes into the zipped configs; the rest of the tiny run goes on the command line.
RUN_OVERRIDES = {key: value for key, value in TINY_TRAINING.items() if key not in TINY_NETWORK}
INSTALL_TIMEOUT_S = 1800


def fresh_env() -> dict[str, str]:
    """This process's environment less what would lead an interpreter to the repository or its virtualenv."""
    hidden = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    return {key: value for key, value in os.environ.items() if key not in hidden} | {"PYTHONWARNINGS": "ignore"}


def run_checked(command: list[str], cwd: Path, timeout: int = 600) -> str:
    """Run ``command`` in ``cwd`` with :func:`fresh_env`; fail with its output's tail unless it succeeds."""
    result = subprocess.run(command, cwd=cwd, env=fresh_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def monai_bundle_run(python: Path, bundle: Path, config_files: list[str], **overrides) -> None:
    """``python -m monai.bundle run`` of ``configs/<config_files>`` inside ``bundle``, as its README shows."""
    listed = "[" + ",".join(f"'configs/{name}'" for name in config_files) + "]"
    command = [str(python), "-m", "monai.bundle", "run", "--config_file", listed]
    for key, value in overrides.items():
        # MONAI's CLI reads values as Python literals: False, not false.
        command += [f"--{key}", value if isinstance(value, str) else repr(value)]
    run_checked(command, cwd=bundle)


@pytest.fixture(scope="session")
def shared_zip(tmp_path_factory) -> dict[str, Path]:
    """One epoch of the tiny network on phantoms, exported from a copy of the bundle, and the zip unpacked."""
    root = tmp_path_factory.mktemp("shared_bundle")
    train_tiny(root, seed=11)
    bundle = root / BUNDLE_NAME
    shutil.copytree(default_bundle_dir(), bundle, ignore=shutil.ignore_patterns("models", "dist", "eval", "runs"))
    write_standalone_inference(bundle)  # without the shipped model, inference.json holds common.json's network
    exported = export_bundle(bundle, root / "models" / "model.pt", TINY_NETWORK, dist_dir=root / "dist")
    with zipfile.ZipFile(exported.archive) as archive:
        archive.extractall(root / "unzipped")
    return {"raw": root / "raw", "dataset": root / "dataset", "bundle": root / "unzipped" / BUNDLE_NAME}


@pytest.fixture(scope="session")
def fresh_python(shared_zip, tmp_path_factory) -> Path:
    """A new virtualenv with the zip's ``requirements.txt`` and, without its dependencies, the wheel it carries.

    Built once per session; pip's cache is shared, and PyTorch's CPU wheel is found where pip is configured to look.
    """
    root = tmp_path_factory.mktemp("fresh_venv")
    run_checked([sys.executable, "-m", "venv", str(root / "venv")], cwd=root)
    python = root / "venv" / "bin" / "python"
    bundle = shared_zip["bundle"]
    (wheel,) = (bundle / "wheels").glob("*.whl")
    pip_install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run_checked([*pip_install, "-r", "requirements.txt"], cwd=bundle, timeout=INSTALL_TIMEOUT_S)
    run_checked([*pip_install, "--no-deps", str(wheel.relative_to(bundle))], cwd=bundle, timeout=INSTALL_TIMEOUT_S)
    return python


@pytest.fixture(scope="session")
def fresh_training(fresh_python, shared_zip, tmp_path_factory) -> dict[str, Path]:
    """One epoch of the unzipped bundle's ``train.json`` in the fresh virtualenv."""
    root = tmp_path_factory.mktemp("fresh_training")
    monai_bundle_run(
        fresh_python,
        shared_zip["bundle"],
        ["common.json", "train.json"],
        dataset_dir=str(shared_zip["dataset"]),
        ckpt_dir=str(root / "models"),
        output_dir=str(root / "training"),
        **RUN_OVERRIDES,
    )
    return {"ckpt_dir": root / "models", "training": root / "training"}


def test_zip_lists_what_its_metadata_names_and_carries_the_package_wheel(shared_zip):
    bundle = shared_zip["bundle"]
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    lines = [line for line in (bundle / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == pinned_requirements(metadata)
    assert {"monai==" + metadata["monai_version"], "torch==" + metadata["pytorch_version"]} <= set(lines)
    (wheel,) = (bundle / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as packed:
        names = packed.namelist()
    assert "pipeline/networks/__init__.py" in names and f"pipeline/schemas/{DEFAULT_SCHEMA.name}" in names
    assert not any("__pycache__" in name or name.startswith(("tests/", "bundles/")) for name in names)


def test_wheel_build_without_a_source_tree_says_to_export_from_a_clone(tmp_path):
    with pytest.raises(BundleExportError, match=r"no pyproject.toml.*export from a clone of the repository"):
        build_wheel(tmp_path / "wheels", source_tree=tmp_path)
    assert not (tmp_path / "wheels").exists()


def test_fresh_env_imports_the_wheel_not_the_repository_and_finds_the_bundle_it_runs_in(fresh_python, shared_zip):
    bundle = shared_zip["bundle"]
    probe = "import json, sys, pipeline as p; print(json.dumps([p.__file__, str(p.default_bundle_dir())] + sys.path))"
    package_file, default_bundle, *path = json.loads(run_checked([str(fresh_python), "-c", probe], cwd=bundle))
    assert Path(package_file).is_relative_to(fresh_python.parents[1])  # installed into the fresh venv, not editable
    assert not any(entry and Path(entry).resolve().is_relative_to(REPOSITORY) for entry in path)
    # Installed from a wheel, the package has no bundle beside it: the default is the folder it runs in.
    assert Path(default_bundle).resolve() == bundle.resolve()


def test_one_epoch_in_the_fresh_env_writes_a_model_and_a_learning_curve(fresh_training):
    state = torch.load(fresh_training["ckpt_dir"] / "model.pt", map_location="cpu", weights_only=True)
    assert state["encoder.0.convs.conv_0.conv.weight"].shape[0] == TINY_NETWORK["network_def#features"][0]
    curve = (fresh_training["training"] / "learning_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,train_loss") and len(curve) == 2


def test_evaluation_in_the_fresh_env_scores_every_test_slice(fresh_python, fresh_training, shared_zip, tmp_path):
    monai_bundle_run(
        fresh_python,
        shared_zip["bundle"],
        ["common.json", "train.json", "evaluate.json"],
        dataset_dir=str(shared_zip["dataset"]),
        ckpt_dir=str(fresh_training["ckpt_dir"]),
        output_dir=str(tmp_path),
        **RUN_OVERRIDES,
    )
    test_split = json.loads((shared_zip["dataset"] / "datalist.json").read_text())["test"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overall"]["n"] == len(test_split) > 0
    assert 0.0 <= summary["overall"]["dice_mean"] <= 1.0


def write_slices(raw: Path, folder: Path) -> dict[str, tuple[int, ...]]:
    """Two phantom slices, an 8-bit PNG and a non-square float NIfTI; returns each file's shape."""
    folder.mkdir()
    first = read_figshare_slice(raw / "1.mat").image.astype(np.float32)
    second = read_figshare_slice(raw / "2.mat").image.astype(np.float32)[:, 8:-24]
    Image.fromarray(np.clip(first / first.max() * 255.0, 0, 255).astype(np.uint8)).save(folder / "a.png")
    nib.save(nib.Nifti1Image(second.T, np.eye(4)), folder / "b.nii.gz")
    return {name: tuple(LoadImage(image_only=True)(folder / name).shape) for name in ("a.png", "b.nii.gz")}


@pytest.mark.parametrize("config_name", ["inference.json", "inference_torchscript.json"])
def test_inference_in_the_fresh_env_writes_a_binary_mask_per_slice_at_its_size(
    config_name, fresh_python, fresh_training, shared_zip, tmp_path
):
    shapes = write_slices(shared_zip["raw"], tmp_path / "inputs")
    # inference.json builds the network from the wheel with the weights trained in the fresh env; the TorchScript
    # config runs the zip's models/model.ts. Each runs alone, without common.json, as MONAI Label reads it.
    ckpt_dir = fresh_training["ckpt_dir"] if config_name == "inference.json" else shared_zip["bundle"] / "models"
    monai_bundle_run(
        fresh_python,
        shared_zip["bundle"],
        [config_name],
        dataset_dir=str(tmp_path / "inputs"),
        output_dir=str(tmp_path / "masks"),
        ckpt_dir=str(ckpt_dir),
        num_workers=0,
        device="$torch.device('cpu')",
    )
    for name, shape in shapes.items():
        mask = np.asarray(LoadImage(image_only=True)(tmp_path / "masks" / f"{name.split('.')[0]}_seg.nii.gz"))
        assert mask.shape == shape, name
        assert set(np.unique(mask)) <= {0, 1}, name


def model_card_infer_lines(bundle: Path) -> list[list[str]]:
    """The ``python -m pipeline infer`` command lines of the zip's model card, as a reader would copy them."""
    card = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    lines = [line.split("#")[0].split() for line in card.splitlines() if line.startswith("python -m pipeline infer ")]
    assert len(lines) >= 3, "the model card lost its infer examples"
    return lines


def test_the_model_cards_infer_lines_run_in_the_fresh_env_from_the_unzipped_folder(fresh_python, shared_zip, tmp_path):
    """Slices, a DICOM study and a 3D NIfTI volume, each through the card's own line, in the env its README builds."""
    from pipeline.phantoms.dicom_series import write_phantom_series

    bundle = shared_zip["bundle"]
    write_slices(shared_zip["raw"], bundle / "my_slices")
    write_phantom_series(bundle / "dicom_study", patients=1, slices=4, size=128, seed=3)
    volume = np.stack([read_figshare_slice(shared_zip["raw"] / f"{k}.mat").image for k in (1, 2)], axis=-1)
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([0.5, 0.5, 5.0, 1.0])), bundle / "t1c_volume.nii.gz")
    for words in model_card_infer_lines(bundle):
        run_checked([str(fresh_python), *words[1:], "--device", "cpu", "--num_workers", "0"], cwd=bundle)
    assert sorted(path.name for path in (bundle / "masks").glob("*_seg.nii.gz")) == ["a_seg.nii.gz", "b_seg.nii.gz"]
    assert (bundle / "volume_masks" / "t1c_volume_seg.nii.gz").is_file()
    assert len(list((bundle / "segs").rglob("*_seg.dcm"))) == 1
