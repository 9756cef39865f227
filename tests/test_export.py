"""Export: TorchScript and ONNX equal to the eager network, a zip that runs where `pipeline` is not installed."""

from __future__ import annotations

import hashlib
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
from tiny_bundle import TINY_NETWORK, train_tiny

from pipeline import BUNDLE_NAME, DEFAULT_SCHEMA, __version__, default_bundle_dir
from pipeline.__main__ import main
from pipeline.bundle_configs import write_standalone_inference
from pipeline.data.figshare import read_figshare_slice
from pipeline.export import BundleExportError, bundle_export, export_bundle, fetch_large_files, read_large_files
from pipeline.export.zoo_verification import verify_like_model_zoo
from pipeline.networks import UNet2D
from pipeline.workflow import run_bundle

FEATURES = TINY_NETWORK["network_def#features"]
# The shapes the checkpoint is trained with; export must be told them exactly as training was.
SHAPE_OVERRIDES = TINY_NETWORK
# Files a bundle folder collects while it is used, none of which may travel in the zip.
LOCAL_CLUTTER = (
    "models/latest_checkpoint_epoch=1.pt",
    "eval/summary.json",
    "runs/tensorboard/events.out.tfevents.1",
    "data/images/1.png",
    "configs/.cache/state.json",
    "configs/__pycache__/x.pyc",
)


def copy_bundle(destination: Path) -> Path:
    """A copy of the repository's bundle (configs, docs, licence) to export from without touching the original."""
    bundle = destination / BUNDLE_NAME
    shutil.copytree(default_bundle_dir(), bundle, ignore=shutil.ignore_patterns("models", "dist", "eval", "runs"))
    write_standalone_inference(bundle)  # without the shipped model, inference.json holds common.json's network
    return bundle


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One epoch of the bundle's training on phantoms, with the tiny network, into a temporary folder."""
    root = tmp_path_factory.mktemp("trained")
    train_tiny(root, seed=5)
    return {"root": root, "raw": root / "raw", "ckpt": root / "models" / "model.pt"}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, Path]:
    """The trained checkpoint exported from a copy of the bundle cluttered with local files."""
    root = tmp_path_factory.mktemp("exported")
    bundle = copy_bundle(root)
    for name in LOCAL_CLUTTER:
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_text("local only")
    hosted = root / "hosted"
    result = export_bundle(bundle, trained["ckpt"], SHAPE_OVERRIDES, weights_url=hosted.as_uri())
    return {"bundle": bundle, "hosted": hosted, "result": result}


def eager_network(ckpt: Path) -> UNet2D:
    network = UNet2D(in_channels=1, out_channels=2, features=FEATURES, norm="batch")
    network.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    return network.eval()


def unpack(archive: Path, destination: Path) -> Path:
    with zipfile.ZipFile(archive) as packed:
        packed.extractall(destination)
    return destination / BUNDLE_NAME


def test_torchscript_and_onnx_equal_the_eager_network_at_any_batch_and_size(trained, exported):
    onnxruntime = pytest.importorskip("onnxruntime")
    network = eager_network(trained["ckpt"])
    scripted = torch.jit.load(str(exported["result"].torchscript), map_location="cpu").eval()
    session = onnxruntime.InferenceSession(str(exported["result"].onnx), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for shape in [(1, 1, 32, 32), (3, 1, 48, 64), (2, 1, 37, 50)]:
        image = torch.rand(shape, generator=generator)
        with torch.no_grad():
            expected = network(image)
            torch.testing.assert_close(scripted(image), expected, rtol=1e-4, atol=1e-4)
        (from_onnx,) = session.run(None, {"image": image.numpy()})
        torch.testing.assert_close(torch.from_numpy(from_onnx), expected, rtol=1e-4, atol=1e-4)


def test_torchscript_model_carries_the_metadata_and_the_monai_only_inference_config_with_the_overrides(exported):
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(exported["result"].torchscript), map_location="cpu", _extra_files=extra)
    metadata = json.loads(extra["metadata.json"])
    bundle_metadata = json.loads((exported["bundle"] / "configs" / "metadata.json").read_text())
    assert metadata["version"] == bundle_metadata["version"]
    assert metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    config = json.loads(extra["inference.json"])
    assert b"pipeline" not in extra["inference.json"] and config["image_size"] == 32
    assert config["network_def"].startswith("$torch.jit.load(")
    # Where MONAI Deploy's bundle operator reads it: <file stem>/extra/inference.json inside the TorchScript zip.
    with zipfile.ZipFile(exported["result"].torchscript) as packed:
        assert json.loads(packed.read("model/extra/inference.json")) == config


def test_zip_holds_configs_docs_licence_and_weights_and_nothing_local(exported):
    bundle, archive = exported["bundle"], exported["result"].archive
    version = json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    assert archive == bundle / "dist" / f"{BUNDLE_NAME}_v{version}.zip"
    with zipfile.ZipFile(archive) as packed:
        names = {name.removeprefix(f"{BUNDLE_NAME}/") for name in packed.namelist()}
    expected = {"LICENSE", "large_files.yml", "models/model.pt", "models/model.ts", "models/model.onnx"}
    expected.add("models/model_config.json")  # training wrote it beside the checkpoint
    expected |= {"requirements.txt", f"wheels/brain_tumor_mri_2d-{__version__}-py3-none-any.whl"}
    expected |= {path.relative_to(bundle).as_posix() for path in (bundle / "docs").rglob("*") if path.is_file()}
    expected |= {f"configs/{path.name}" for path in (bundle / "configs").iterdir() if path.is_file()}
    assert names == expected
    assert not any(clutter in names for clutter in LOCAL_CLUTTER)
    digest, name = exported["result"].checksum.read_text().split()
    assert name == archive.name and digest == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_zipped_configs_record_the_overrides_the_checkpoint_was_trained_with(exported, tmp_path):
    unpacked = unpack(exported["result"].archive, tmp_path)
    for name in ("inference.json", "train.json"):
        config = json.loads((unpacked / "configs" / name).read_text())
        assert config["network_def"]["features"] == FEATURES and config["image_size"] == 32, name
    assert json.loads((unpacked / "configs" / "inference_torchscript.json").read_text())["image_size"] == 32
    repo_config = json.loads((default_bundle_dir() / "configs" / "common.json").read_text())
    assert repo_config["network_def"]["features"] != FEATURES  # the user's bundle is left as it was


def test_the_exported_zip_passes_model_zoo_verification_in_full(exported, tmp_path):
    unpacked = unpack(exported["result"].archive, tmp_path)
    lines = verify_like_model_zoo(unpacked, DEFAULT_SCHEMA)
    assert lines[-1] == "inference properties are verified correctly."
    assert "export weights into TorchScript module successfully." in "\n".join(lines)


def write_inputs(raw: Path, folder: Path) -> None:
    """Two phantom slices as an 8-bit PNG and a float NIfTI, one cropped to a non-square size."""
    folder.mkdir()
    first = read_figshare_slice(raw / "1.mat").image.astype(np.float32)
    second = read_figshare_slice(raw / "2.mat").image.astype(np.float32)[:, 8:-24]
    png = np.clip(first / first.max() * 255.0, 0, 255).astype(np.uint8)
    Image.fromarray(png).save(folder / "a.png")
    nib.save(nib.Nifti1Image(second.T, np.eye(4)), folder / "b.nii.gz")


def hidden_pipeline_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose interpreter finds a `pipeline` module that refuses to import, ahead of the project."""
    blocker = tmp_path / "hide_pipeline"
    blocker.mkdir()
    (blocker / "pipeline.py").write_text("raise ImportError('the pipeline package is hidden here')\n")
    return {**os.environ, "PYTHONPATH": str(blocker), "PYTHONWARNINGS": "ignore"}


def test_unzipped_bundle_segments_without_pipeline_exactly_as_the_in_tree_bundle(trained, exported, tmp_path):
    unpacked = unpack(exported["result"].archive, tmp_path / "unzipped")
    write_inputs(trained["raw"], tmp_path / "inputs")
    env = hidden_pipeline_env(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import pipeline"], cwd=unpacked, env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "hidden here" in probe.stderr
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference_torchscript.json"]
    command += ["--dataset_dir", str(tmp_path / "inputs"), "--output_dir", str(tmp_path / "exported_masks")]
    # Without the post-processing every pixel of both masks comes straight from the two models' argmax.
    command += ["--keep_largest_component", "False", "--fill_holes", "False"]
    command += ["--num_workers", "0", "--device", "$torch.device('cpu')"]
    result = subprocess.run(command, cwd=unpacked, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_bundle(
        default_bundle_dir(),
        ["inference.json"],
        "infer",
        dataset_dir=str(tmp_path / "inputs"),
        ckpt_dir=str(trained["ckpt"].parent),
        output_dir=str(tmp_path / "in_tree_masks"),
        flip_tta=False,
        save_overlays=False,
        keep_largest_component=False,
        fill_holes=False,
        num_workers=0,
        device="$torch.device('cpu')",
    )  # the network and input size come from the model_config.json training wrote beside the weights
    for name, input_name in (("a_seg.nii.gz", "a.png"), ("b_seg.nii.gz", "b.nii.gz")):
        exported_mask = np.asarray(LoadImage(image_only=True)(tmp_path / "exported_masks" / name))
        in_tree_mask = np.asarray(LoadImage(image_only=True)(tmp_path / "in_tree_masks" / name))
        source = np.asarray(LoadImage(image_only=True)(tmp_path / "inputs" / input_name))
        assert exported_mask.shape == source.shape[:2], name
        assert 0 < exported_mask.mean() < 1, name  # a mask with both classes, so equality says something
        np.testing.assert_array_equal(exported_mask, in_tree_mask, err_msg=name)


def test_every_weights_file_of_the_zip_comes_from_the_exported_checkpoint_and_the_unzipped_bundle_passes_check(
    trained, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(bundle_export, "missing_onnx_packages", lambda: ["onnx"])  # ONNX export is tested above
    bundle = copy_bundle(tmp_path)  # its large_files.yml lists the shipped weights, its models/ holds other ones
    (bundle / "models").mkdir()
    torch.save(UNet2D(features=FEATURES, norm="batch").state_dict(), bundle / "models" / "model.pt")
    assert main(["export", "--bundle", str(bundle), "--ckpt", str(trained["ckpt"]), "--dist", str(tmp_path)]) == 0
    assert not (bundle / "models" / "model.ts").exists()  # TorchScript of these weights goes beside them
    (archive,) = tmp_path.glob("*.zip")
    unpacked = unpack(archive, tmp_path / "unzipped")
    assert (unpacked / "models" / "model.pt").read_bytes() == trained["ckpt"].read_bytes()
    listed = {entry["path"]: entry["hash_val"] for entry in read_large_files(unpacked)}
    assert listed == {"models/model.pt": hashlib.sha256(trained["ckpt"].read_bytes()).hexdigest()}
    capsys.readouterr()
    assert main(["check", "--bundle", str(unpacked)]) == 0, capsys.readouterr().err


def test_weights_listed_in_large_files_are_fetched_from_a_file_url_and_hash_checked(exported, tmp_path):
    unpacked = unpack(exported["result"].archive, tmp_path)
    originals = {name: (unpacked / "models" / name).read_bytes() for name in ("model.pt", "model.ts", "model.onnx")}
    exported["hosted"].mkdir(exist_ok=True)
    for name, data in originals.items():
        (exported["hosted"] / name).write_bytes(data)
    shutil.rmtree(unpacked / "models")
    assert main(["fetch-weights", "--bundle", str(unpacked)]) == 0
    assert {name: (unpacked / "models" / name).read_bytes() for name in originals} == originals
    (unpacked / "models" / "model.onnx").unlink()
    (exported["hosted"] / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleExportError, match="model.onnx: sha256 differs"):
        fetch_large_files(unpacked)
    assert not (unpacked / "models" / "model.onnx").exists()


def assert_nothing_written(bundle: Path) -> None:
    assert not (bundle / "models").exists() and not (bundle / "dist").exists()


def test_export_without_a_checkpoint_names_it_and_writes_nothing(tmp_path, capsys):
    bundle = copy_bundle(tmp_path)
    assert main(["export", "--bundle", str(bundle)]) == 1
    assert "models/model.pt: checkpoint not found" in capsys.readouterr().err
    assert_nothing_written(bundle)


def test_export_without_the_onnx_packages_writes_the_rest_and_says_how_to_add_them(
    trained, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(bundle_export, "missing_onnx_packages", lambda: ["onnx", "onnxruntime"])
    bundle = copy_bundle(tmp_path)
    assert main(["export", "--bundle", str(bundle), "--ckpt", str(trained["ckpt"])]) == 0
    assert (trained["ckpt"].parent / "model.ts").is_file()
    (archive,) = (bundle / "dist").glob("*.zip")
    with zipfile.ZipFile(archive) as packed:
        assert not any(name.endswith(".onnx") for name in packed.namelist())
    assert capsys.readouterr().err.splitlines() == [
        "warning: no ONNX model written: onnx, onnxruntime not installed; add them with `pip install '.[export]'` "
        "and export again"
    ]


def test_export_of_a_checkpoint_from_another_network_names_the_mismatching_weight(trained, tmp_path):
    bundle = copy_bundle(tmp_path)
    with pytest.raises(BundleExportError) as error:
        export_bundle(bundle, trained["ckpt"], {"image_size": 32})  # widths left at the config's default
    message = str(error.value)
    assert str(trained["ckpt"]) in message and "'encoder.0.convs.conv_0.conv.weight' has shape [4, 1, 3, 3]" in message
    assert "\n" not in message
    assert_nothing_written(bundle)


def test_export_refuses_metadata_that_fails_the_schema(trained, tmp_path):
    bundle = copy_bundle(tmp_path)
    meta_file = bundle / "configs" / "metadata.json"
    metadata = json.loads(meta_file.read_text())
    del metadata["network_data_format"]
    meta_file.write_text(json.dumps(metadata))
    with pytest.raises(
        BundleExportError, match=r"metadata.json: does not match MONAI's metadata schema.*network_data_format"
    ):
        export_bundle(bundle, trained["ckpt"], SHAPE_OVERRIDES)
    assert_nothing_written(bundle)


def test_export_refuses_to_go_on_without_the_metadata_schema(trained, tmp_path):
    bundle = copy_bundle(tmp_path)
    absent = tmp_path / "absent_schema.json"
    with pytest.raises(BundleExportError, match=r"absent_schema.json: MONAI's metadata schema not found"):
        export_bundle(bundle, trained["ckpt"], SHAPE_OVERRIDES, schema=absent)
    assert_nothing_written(bundle)


def test_export_refuses_new_weights_under_an_already_released_version(trained, exported, tmp_path):
    bundle = exported["bundle"]
    archive_before = exported["result"].archive.read_bytes()
    retrained = eager_network(trained["ckpt"]).state_dict()
    retrained["head.bias"] += 1.0
    torch.save(retrained, tmp_path / "retrained.pt")
    with pytest.raises(BundleExportError, match="bump 'version' in configs/metadata.json"):
        export_bundle(bundle, tmp_path / "retrained.pt", SHAPE_OVERRIDES)
    assert exported["result"].archive.read_bytes() == archive_before


def test_export_accepts_only_overrides_some_config_defines(trained, tmp_path):
    bundle = copy_bundle(tmp_path)
    with pytest.raises(BundleExportError, match="no config defines 'network_def#featurez'"):
        export_bundle(bundle, trained["ckpt"], {"network_def#featurez": FEATURES})
    assert_nothing_written(bundle)
