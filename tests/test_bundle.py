"""The bundle end to end on phantom data: train, evaluate, infer, metadata and properties."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata, verify_net_in_out
from monai.transforms import LoadImage
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK, TINY_TRAINING, phantom_dataset, save_threshold_network

from pipeline import DEFAULT_SCHEMA, default_bundle_dir
from pipeline.__main__ import COMMANDS, main
from pipeline.checkpoints import MODEL_CONFIG_FILE
from pipeline.data.figshare import FigshareMatReader, write_figshare_slice
from pipeline.export import bundle_export
from pipeline.overrides import parse_overrides
from pipeline.user_errors import UserError
from pipeline.workflow import bundle_config_files, merged_config, run_bundle

BUNDLE = default_bundle_dir()
CONFIGS = BUNDLE / "configs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Phantoms -> prepare -> one epoch of training through the standard `python -m monai.bundle run`."""
    root = tmp_path_factory.mktemp("bundle")
    phantom_dataset(root, seed=3)
    ckpt_dir, train_dir = root / "models", root / "training"
    configs = "['configs/common.json','configs/train.json']"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs]
    command += ["--dataset_dir", str(root / "dataset"), "--ckpt_dir", str(ckpt_dir), "--output_dir", str(train_dir)]
    for key, value in TINY_TRAINING.items():  # MONAI's CLI reads Python literals: False, not false
        command += [f"--{key}", value if isinstance(value, str) else repr(value)]
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {
        "root": root,
        "dataset": root / "dataset",
        "ckpt_dir": ckpt_dir,
        "train_dir": train_dir,
        "log": result.stdout + result.stderr,
    }


def test_one_epoch_of_training_writes_best_and_resumable_checkpoints(trained):
    best = torch.load(trained["ckpt_dir"] / "model.pt", map_location="cpu", weights_only=True)
    assert any(key.endswith("weight") for key in best)
    (latest,) = trained["ckpt_dir"].glob("latest_checkpoint*.pt")
    state = torch.load(latest, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer"} <= set(state)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"]  # one full epoch
    curve = (trained["train_dir"] / "learning_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,train_loss") and "val_mean_dice" in curve[0] and len(curve) == 2
    assert (trained["train_dir"] / "learning_curve.png").stat().st_size > 0


def test_training_prints_one_summary_line_per_epoch_and_none_of_the_known_noise(trained):
    summaries = [line for line in trained["log"].splitlines() if " - pipeline.training - INFO - epoch " in line]
    assert len(summaries) == 1 and "epoch 1/1: loss " in summaries[0] and "val_mean_dice" in summaries[0]
    for noise in ("train_loss", "nvImageCodec", "Epoch[1] Complete", "always_return_as_numpy"):
        assert noise not in trained["log"], noise


def test_training_through_monai_cli_writes_the_model_definition_beside_the_weights(trained):
    network_def = json.loads((CONFIGS / "common.json").read_text())["network_def"]
    assert json.loads((trained["ckpt_dir"] / MODEL_CONFIG_FILE).read_text()) == {
        "network_def": {**network_def, "features": TINY_TRAINING["network_def#features"]},
        "image_size": TINY_TRAINING["image_size"],
        "intensity_percentiles": [0.5, 99.5],
    }


def test_a_model_trained_through_monai_cli_exports_evaluates_and_infers_with_no_setting_retyped(
    trained, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(bundle_export, "missing_onnx_packages", lambda: ["onnx"])  # ONNX export is tested elsewhere
    bundle = tmp_path / BUNDLE.name  # its stand-alone inference.json describes the shipped fold ensemble
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "dist", "eval", "runs"))
    ckpt_dir = str(trained["ckpt_dir"])
    assert main(["export", "--bundle", str(bundle), "--ckpt", f"{ckpt_dir}/model.pt", "--dist", str(tmp_path)]) == 0
    run = ["--device", "cpu", "--ckpt_dir", ckpt_dir, "--num_workers", "0"]
    evaluation = ["evaluate", "--dataset-dir", str(trained["dataset"]), "--output_dir", str(tmp_path / "scores")]
    assert main([*evaluation, *run]) == 0
    (tmp_path / "inputs").mkdir()
    Image.fromarray(_bright_corner_image().astype(np.uint8)).save(tmp_path / "inputs" / "slice.png")
    assert main(["infer", "--input", str(tmp_path / "inputs"), "--output", str(tmp_path / "masks"), *run]) == 0
    assert (tmp_path / "masks" / "slice_seg.nii.gz").is_file()


def evaluate(trained: dict, output_dir: Path, **overrides) -> ConfigWorkflow:
    """Evaluate the trained tiny model on the test split into ``output_dir``."""
    return run_bundle(
        BUNDLE,
        ["train.json", "evaluate.json"],
        "eval",
        dataset_dir=str(trained["dataset"]),
        ckpt_dir=str(trained["ckpt_dir"]),
        output_dir=str(output_dir),
        **TINY_TRAINING,
        **overrides,
    )


def test_evaluation_writes_dice_and_hd95_per_slice_type_and_patient(trained, tmp_path):
    datalist = json.loads((trained["dataset"] / "datalist.json").read_text())
    evaluate(trained, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["per_tumor_type"]) == {entry["tumor_type_name"] for entry in datalist["test"]}
    assert set(summary["per_patient"]) == {entry["pid"] for entry in datalist["test"]}
    assert summary["overall"]["n"] == len(datalist["test"])
    assert 0.0 <= summary["overall"]["dice_mean"] <= 1.0
    per_slice = (tmp_path / "per_slice.csv").read_text().splitlines()
    assert per_slice[0] == "slice_id,filename,pid,tumor_type_name,dice,hd95"
    assert len(per_slice) == 1 + len(datalist["test"])
    for figure in ("dice_by_tumor_type.png", "overlays_best_median_worst.png"):
        assert (tmp_path / figure).stat().st_size > 0
    assert (tmp_path / "val_mean_dice_raw.csv").is_file()


def test_evaluation_averages_a_flipped_pass_by_default_and_scores_every_slice_without_it(trained, tmp_path):
    """Flip TTA is the default of evaluation, as of inference; ``flip_tta false`` gives one plain pass."""
    datalist = json.loads((trained["dataset"] / "datalist.json").read_text())
    workflow = evaluate(trained, tmp_path, flip_tta=False)
    assert type(workflow.parser.get_parsed_content("validate#inferer")).__name__ == "SimpleInferer"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overall"]["n"] == len(datalist["test"])
    for config in (["train.json", "evaluate.json"], ["inference.json"]):
        assert merged_config(bundle_config_files(BUNDLE, config))["flip_tta"] is True


def _infer_with_threshold_network(inputs: Path, ckpt_dir: Path, output_dir: Path, **overrides) -> None:
    run_bundle(
        BUNDLE,
        ["inference.json"],
        "infer",
        dataset_dir=str(inputs),
        ckpt_dir=str(ckpt_dir),
        output_dir=str(output_dir),
        image_size=32,
        num_workers=0,
        device="$torch.device('cpu')",
        network_def=THRESHOLD_NETWORK,
        **overrides,
    )


def _bright_corner_image(rows: int = 96, cols: int = 64) -> np.ndarray:
    """A non-square slice (display orientation) that is bright only in its top-left corner."""
    image = np.full((rows, cols), 20, dtype=np.int16)
    image[: rows // 3, : cols // 2] = 230
    return image


def _write_slice_in_three_formats(folder: Path) -> np.ndarray:
    display = _bright_corner_image()
    folder.mkdir()
    mask = np.zeros_like(display, dtype=np.uint8)
    mask[:4, :4] = 1
    write_figshare_slice(folder / "1.mat", display, mask, 1, "P1")
    Image.fromarray(display.astype(np.uint8)).save(folder / "2.png")
    # MONAI arrays are indexed (x, y): the NIfTI holds the transposed display array.
    nib.save(nib.Nifti1Image(display.T.astype(np.float32), np.eye(4)), folder / "3.nii.gz")
    return display


def test_inference_masks_keep_each_inputs_size_and_orientation(tmp_path):
    display = _write_slice_in_three_formats(tmp_path / "inputs")
    save_threshold_network(tmp_path / "model.pt")
    for output_format in ("nii.gz", "png"):
        out = tmp_path / f"out_{output_format}"
        _infer_with_threshold_network(tmp_path / "inputs", tmp_path, out, output_ext=f".{output_format}")
        expected = display.T > 100  # MONAI orientation of the bright corner
        for stem in ("1", "2", "3"):
            mask = np.asarray(LoadImage(image_only=True)(out / f"{stem}_seg.{output_format}")) > 0
            assert mask.shape == expected.shape, (stem, output_format)
            agreement = (mask & expected).sum() / (mask | expected).sum()
            assert agreement > 0.9, (stem, output_format, agreement)
            assert (out / "overlays" / f"{stem}_overlay.png").is_file()
    mat = np.asarray(LoadImage(image_only=True, reader=FigshareMatReader(field="image"))(tmp_path / "inputs/1.mat"))
    assert mat.shape == display.T.shape


def test_a_checkpoint_saved_on_a_gpu_loads_on_a_cpu_only_machine(tmp_path, monkeypatch):
    (tmp_path / "inputs").mkdir()
    Image.fromarray(_bright_corner_image().astype(np.uint8)).save(tmp_path / "inputs" / "slice.png")
    with monkeypatch.context() as patch:
        # Tag every storage as CUDA, exactly what torch.save writes for a model trained on a GPU.
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_threshold_network(tmp_path / "model.pt")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "model.pt", weights_only=True)
    _infer_with_threshold_network(tmp_path / "inputs", tmp_path, tmp_path / "out")
    assert (tmp_path / "out" / "slice_seg.nii.gz").is_file()


@pytest.mark.parametrize(("config", "workflow_type"), [("train.json", "train"), ("inference.json", "infer")])
def test_bundle_configs_define_every_property_monai_requires(config, workflow_type, trained, tmp_path):
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "common.json"), str(CONFIGS / config)],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        dataset_dir=str(trained["dataset"]),
        bundle_root=str(tmp_path),
        # inference.json holds the shipped model's own definition, whichever network that is
        **{key: value for key, value in TINY_TRAINING.items() if workflow_type == "train" or "network_def" not in key},
    )
    workflow.initialize()
    assert not workflow.check_properties()


def test_metadata_is_valid_against_the_monai_schema_shipped_with_the_package():
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(DEFAULT_SCHEMA))


def test_network_input_and_output_match_the_metadata():
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=[str(CONFIGS / "common.json"), str(CONFIGS / "inference.json")],
        device="cpu",
    )


def test_demo_runs_every_stage_in_short_form(tmp_path, capsys):
    arguments = ["demo", "--out", str(tmp_path), "--patients", "10", "--slices", "1", "--size", "128"]
    arguments += ["--device", "cpu"]
    for key, value in TINY_TRAINING.items():
        if key != "device":
            arguments += [f"--{key}", json.dumps(value)]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "test Dice per tumour type" in printed
    datalist = json.loads((tmp_path / "dataset" / "datalist.json").read_text())
    masks = sorted(path.name for path in (tmp_path / "predictions").glob("*_seg.nii.gz"))
    assert len(masks) == len(datalist["test"]) > 0
    assert (tmp_path / "evaluation" / "summary.json").is_file()


def test_overrides_are_parsed_as_json_where_possible():
    overrides = parse_overrides(["--epochs", "5", "--train#dataloader#batch_size", "4", "--tag", "run-a"])
    assert overrides == {"epochs": 5, "train#dataloader#batch_size": 4, "tag": "run-a"}
    with pytest.raises(UserError, match="needs a value"):
        parse_overrides(["--epochs"])


def test_every_command_has_help():
    for command in COMMANDS:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", command.replace("_", "-"), "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert result.returncode == 0 and "usage: python -m pipeline" in result.stdout, command
