"""Fold ensembles: probabilities averaged over models and flips, selected by fold, recorded, saved and re-averaged."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK, trained_looking_unet

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.checkpoints import MODEL_CONFIG_FILE
from pipeline.export.fold_ensemble import assemble_fold_ensemble
from pipeline.inference.predictor import BundlePredictor
from pipeline.inferers import FlipTTAInferer
from pipeline.networks import ProbabilityEnsemble, state_digest
from pipeline.phantoms.slices import make_phantom_slice
from pipeline.user_errors import UserError

DEFINITION = {"network_def": THRESHOLD_NETWORK, "image_size": 32, "intensity_percentiles": [0.5, 99.5]}


def _fold_model(folder: Path, bias: float) -> Path:
    """A 1x1-conv fold model marking pixels of the normalised image brighter than ``0.5 + bias``, and its definition."""
    folder.mkdir(parents=True)
    network = torch.nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1))
        network.bias.copy_(torch.tensor([0.5 + bias, -0.5 - bias]))
    torch.save({"model": network.state_dict()}, folder / "model.pt")
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(DEFINITION))
    return folder


@pytest.fixture
def folds(tmp_path) -> dict[int, Path]:
    """Two fold models whose masks differ, and their ensemble in ``tmp_path/ensemble``."""
    models = {1: _fold_model(tmp_path / "fold_1", -0.3), 2: _fold_model(tmp_path / "fold_2", 0.3)}
    assemble_fold_ensemble(models, tmp_path / "ensemble")
    return models


def _gradient_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.tile(np.linspace(0, 255, 48), (40, 1)).astype(np.uint8)).save(path)
    return path


def _infer(source: Path, output: Path, ckpt_dir: Path, *options: str) -> int:
    arguments = ["infer", "--input", str(source), "--output", str(output), "--device", "cpu", "--no-overlays"]
    return main([*arguments, "--ckpt_dir", str(ckpt_dir), "--num_workers", "0", *options])


def _mask(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_the_ensemble_outputs_the_log_of_its_members_mean_probability():
    member = torch.nn.Conv2d(1, 2, kernel_size=1)
    ensemble = ProbabilityEnsemble(member, folds=[1, 2, 3])
    for index, layer in enumerate(ensemble.members):
        torch.nn.init.constant_(layer.weight, index - 1.0)
    inputs = torch.randn(2, 1, 8, 8)
    expected = torch.stack([torch.softmax(layer(inputs), dim=1) for layer in ensemble.members]).mean(0)
    assert torch.allclose(torch.softmax(ensemble(inputs), dim=1), expected, atol=1e-6)
    only_second = ProbabilityEnsemble(member, folds=[1, 2, 3], use_folds=[2])
    only_second.load_state_dict(ensemble.state_dict())
    assert torch.allclose(only_second(inputs), torch.log_softmax(ensemble.members[1](inputs), dim=1), atol=1e-5)
    with pytest.raises(UserError, match="holds folds 1, 2, 3"):
        ProbabilityEnsemble(member, folds=[1, 2, 3], use_folds=[4])


def _unet_ensemble(seeds=(0, 1, 2), norm: str | None = "batch", **kwargs) -> ProbabilityEnsemble:
    """An ensemble of small trained-looking U-Nets, one per seed (folds 1, 2, 3...), in eval mode."""
    members = [trained_looking_unet(seed, norm=norm) for seed in seeds]
    ensemble = ProbabilityEnsemble(members[0], folds=range(1, len(seeds) + 1), **kwargs)
    for copy, member in zip(ensemble.members, members, strict=True):
        copy.load_state_dict(member.state_dict())
    return ensemble.eval()


def _member_calls(ensemble: ProbabilityEnsemble) -> list[torch.nn.Module]:
    """The list each forward pass of a member alone is appended to."""
    calls = []
    for member in ensemble.members:
        member.register_forward_hook(lambda module, inputs, output: calls.append(module))
    return calls


@pytest.mark.parametrize("norm", [None, "batch", "instance"])
@pytest.mark.parametrize("use_folds", [None, [2], [1, 3]])
def test_as_one_network_the_ensemble_runs_no_member_alone_and_gives_their_mean_probability(norm, use_folds):
    one_network = _unet_ensemble(norm=norm, use_folds=use_folds)
    one_by_one = _unet_ensemble(norm=norm, use_folds=use_folds, one_network=False)
    calls = _member_calls(one_network)
    image = torch.rand(2, 1, 45, 70)
    with torch.no_grad():
        torch.testing.assert_close(one_network(image).exp(), one_by_one(image).exp(), rtol=0, atol=1e-5)
    assert calls == []


def test_as_one_network_the_ensemble_follows_weights_loaded_after_its_first_use():
    ensemble = _unet_ensemble()
    renewed = _unet_ensemble(seeds=(3, 4, 5), one_network=False)
    image = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        before = ensemble(image)
        ensemble.load_state_dict(renewed.state_dict())
        after = ensemble(image)
        torch.testing.assert_close(after.exp(), renewed(image).exp(), rtol=0, atol=1e-5)
    assert not torch.allclose(before, after, atol=1e-3)


def test_training_and_gradients_run_the_members_one_by_one():
    ensemble = _unet_ensemble()
    calls = _member_calls(ensemble)
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ensemble.train()(image)  # batch norm on the batch's statistics, member by member
    assert len(calls) == 3
    ensemble.eval()(image).sum().backward()
    assert len(calls) == 6
    assert all(parameter.grad is not None for parameter in ensemble.parameters())


def test_the_ensemble_scripts_and_exports_to_onnx_with_each_member_in_the_classic_layout(tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    ensemble = _unet_ensemble()
    image = torch.rand(1, 1, 48, 64)
    path = tmp_path / "ensemble.onnx"
    with torch.no_grad():
        expected = ensemble(image)
        torch.testing.assert_close(torch.jit.script(ensemble)(image), expected, rtol=1e-4, atol=1e-4)
        torch.onnx.export(ensemble, (image,), str(path), input_names=["image"], output_names=["pred"], dynamo=False)
    # 18 3x3 convolutions and the 1x1 head per member: the members' own layers, not one grouped network's.
    assert sum(node.op_type == "Conv" for node in onnx.load(str(path)).graph.node) == 3 * 19
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (pred,) = session.run(None, {"image": image.numpy()})
    torch.testing.assert_close(torch.from_numpy(pred), expected, rtol=1e-4, atol=1e-4)


def test_the_shipped_ensemble_as_one_network_makes_the_masks_of_its_members_one_by_one():
    """Phantom figshare slices through the shipped model and the bundle's own inferer (flip TTA), probability
    post-processing (float16 rounding included) and mask post-processing, both ways."""
    segmenter = BundlePredictor(default_bundle_dir(), {"device": "$torch.device('cpu')"}).build().slice_segmenter
    ensemble = segmenter.network
    assert isinstance(ensemble, ProbabilityEnsemble) and len(ensemble.active) == 4
    rng = np.random.default_rng(11)
    slices = np.stack([make_phantom_slice(rng, tumor_type)[0] for tumor_type in (1, 2, 3, 3)]).astype(np.float32)
    probabilities, masks = {}, {}
    ensemble.register_forward_hook(lambda module, inputs, output: probabilities[module.one_network].append(output))
    calls = _member_calls(ensemble)
    for one_network in (True, False):
        ensemble.one_network, probabilities[one_network] = one_network, []
        masks[one_network] = segmenter.segment_slices(slices)
    assert len(calls) == 2 * 4  # the plain and the flipped pass of each member, only when run one by one
    for grouped, alone in zip(probabilities[True], probabilities[False], strict=True):
        torch.testing.assert_close(grouped.exp(), alone.exp(), rtol=0, atol=1e-5)
    assert np.array_equal(masks[True], masks[False])
    assert all(mask.sum() > 100 for mask in masks[True])


def test_flip_tta_averages_probabilities_not_logits():
    network = torch.nn.Conv2d(1, 2, kernel_size=1)
    inputs = torch.randn(1, 1, 6, 6) * 5
    flipped = torch.flip(network(torch.flip(inputs, (2,))), (2,))
    expected = (torch.softmax(network(inputs), dim=1) + torch.softmax(flipped, dim=1)) / 2
    output = FlipTTAInferer(spatial_axes=[0])(inputs, network)
    assert torch.allclose(torch.softmax(output, dim=1), expected, atol=1e-6)


def test_infer_runs_every_fold_by_default_and_one_with_folds(tmp_path, folds):
    source = _gradient_png(tmp_path / "in" / "1.png")
    for name, options in {"all": [], "fold1": ["--folds", "1"], "fold2": ["--folds", "2"]}.items():
        assert _infer(source, tmp_path / name, tmp_path / "ensemble", *options) == 0
    assert _infer(source, tmp_path / "single1", folds[1]) == 0
    tumour = {name: int(_mask(tmp_path / name / "1_seg.nii.gz").sum()) for name in ("all", "fold1", "fold2")}
    assert tumour["fold1"] > tumour["all"] > tumour["fold2"] > 0
    assert np.array_equal(_mask(tmp_path / "fold1" / "1_seg.nii.gz"), _mask(tmp_path / "single1" / "1_seg.nii.gz"))
    record = json.loads((tmp_path / "fold2" / "inference_record.json").read_text())
    digests = [state_digest(torch.load(folds[k] / "model.pt", weights_only=True)["model"]) for k in (1, 2)]
    assert record["weights"]["models"] == [
        {"fold": 1, "sha256": digests[0], "used": False},
        {"fold": 2, "sha256": digests[1], "used": True},
    ]
    assert _infer(source, tmp_path / "fold3", tmp_path / "ensemble", "--folds", "3") == 1


def test_saved_probabilities_make_the_same_masks_through_ensemble(tmp_path, folds):
    for index in range(3):
        _gradient_png(tmp_path / "in" / f"{index}.png")
    assert _infer(tmp_path / "in", tmp_path / "a", tmp_path / "ensemble", "--save-probabilities") == 0
    assert main(["ensemble", "--inputs", str(tmp_path / "a"), "--output", str(tmp_path / "again")]) == 0
    for index in range(3):
        saved, again = tmp_path / "a" / f"{index}_seg.nii.gz", tmp_path / "again" / f"{index}_seg.nii.gz"
        assert np.array_equal(_mask(saved), _mask(again))
        assert np.allclose(nib.load(saved).affine, nib.load(again).affine)
    probability = nib.load(tmp_path / "a" / "0_prob.nii.gz")
    assert probability.shape == nib.load(tmp_path / "a" / "0_seg.nii.gz").shape
    values = np.asarray(probability.dataobj)
    assert 0.0 <= values.min() < 0.5 < values.max() <= 1.0


def test_two_single_fold_runs_ensemble_like_the_fold_ensemble(tmp_path, folds):
    source = _gradient_png(tmp_path / "in" / "1.png")
    for fold in (1, 2):
        assert _infer(source, tmp_path / f"p{fold}", folds[fold], "--save-probabilities") == 0
    assert _infer(source, tmp_path / "both", tmp_path / "ensemble") == 0
    assert (
        main(["ensemble", "--inputs", str(tmp_path / "p1"), str(tmp_path / "p2"), "--output", str(tmp_path / "e")]) == 0
    )
    agreement = np.mean(_mask(tmp_path / "e" / "1_seg.nii.gz") == _mask(tmp_path / "both" / "1_seg.nii.gz"))
    assert agreement > 0.99


def test_ensemble_refuses_folders_that_hold_different_slices(tmp_path, folds, capsys):
    _gradient_png(tmp_path / "in" / "1.png")
    assert _infer(tmp_path / "in", tmp_path / "a", folds[1], "--save-probabilities") == 0
    _gradient_png(tmp_path / "in" / "2.png")
    assert _infer(tmp_path / "in", tmp_path / "b", folds[1], "--save-probabilities") == 0
    assert (
        main(["ensemble", "--inputs", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "e")]) == 1
    )
    assert f"{tmp_path / 'a'}: lacks 2_prob.nii.gz" in capsys.readouterr().err


def test_fold_models_of_other_recipes_are_not_joined(tmp_path):
    first = _fold_model(tmp_path / "fold_1", 0.0)
    second = _fold_model(tmp_path / "fold_2", 0.0)
    (second / MODEL_CONFIG_FILE).write_text(json.dumps({**DEFINITION, "image_size": 64}))
    with pytest.raises(UserError, match="differs from fold 1's definition"):
        assemble_fold_ensemble({1: first, 2: second}, tmp_path / "ensemble")


def test_the_exported_training_config_trains_one_member_of_the_ensemble():
    from pipeline.export.standalone import trained_network

    member = {"_target_": "pipeline.networks.UNet2D", "features": [16, 32, 64, 128, 256]}
    ensemble = {"_target_": "pipeline.networks.ProbabilityEnsemble", "member": member, "folds": [1, 4]}
    assert trained_network(ensemble) == member and trained_network(member) == member


def test_a_shipped_ensemble_splits_back_into_the_fold_models_it_was_joined_from(tmp_path, folds):
    from pipeline.export.fold_ensemble import split_fold_ensemble

    written = split_fold_ensemble(tmp_path / "ensemble", {2: tmp_path / "again_2", 3: tmp_path / "again_3"})
    assert written == [2]
    original = torch.load(folds[2] / "model.pt", weights_only=True)["model"]
    assert state_digest(torch.load(tmp_path / "again_2" / "model.pt", weights_only=True)) == state_digest(original)
    assert json.loads((tmp_path / "again_2" / MODEL_CONFIG_FILE).read_text()) == DEFINITION


def _ensemble(*arguments: str) -> int:
    return main(["ensemble", *arguments])


@pytest.fixture
def two_runs(tmp_path, folds) -> tuple[Path, Path]:
    """Two single-fold runs over the same three slices, their probabilities saved."""
    for index in range(3):
        _gradient_png(tmp_path / "in" / f"{index}.png")
    for fold in (1, 2):
        assert _infer(tmp_path / "in", tmp_path / f"p{fold}", folds[fold], "--save-probabilities") == 0
    return tmp_path / "p1", tmp_path / "p2"


def test_ensemble_writes_a_record_naming_its_runs_their_models_and_every_slice(tmp_path, two_runs):
    assert _ensemble("--inputs", *map(str, two_runs), "--output", str(tmp_path / "e")) == 0
    record = json.loads((tmp_path / "e" / "inference_record.json").read_text())
    assert record["state"] == "finished" and record["settings"]["inputs"] == [str(run) for run in two_runs]
    runs = {Path(run["folder"]).name: run["sha256"] for run in record["weights"]["runs"]}
    earlier = {
        run.name: json.loads((run / "inference_record.json").read_text())["weights"]["sha256"] for run in two_runs
    }
    assert runs == earlier
    entries = {Path(entry["input"]).name: entry for entry in record["inputs"]}
    assert set(entries) == {"0.png", "1.png", "2.png"}
    assert all(entry["status"] == "written" and Path(entry["outputs"][0]).is_file() for entry in entries.values())
    assert not (tmp_path / "e" / ".pipeline-output.lock").exists()


def test_ensemble_holds_the_output_lock_and_refuses_inputs_and_full_folders_as_outputs(tmp_path, two_runs, capsys):
    from pipeline.outputs import output_folder_lock

    with output_folder_lock(tmp_path / "e"):
        assert _ensemble("--inputs", *map(str, two_runs), "--output", str(tmp_path / "e")) == 1
    assert "another run" in capsys.readouterr().err
    assert _ensemble("--inputs", *map(str, two_runs), "--output", str(two_runs[0]), "--overwrite") == 1
    assert "the output folder is or holds the input run" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("a user's file")
    assert _ensemble("--inputs", *map(str, two_runs), "--output", str(tmp_path / "full")) == 1
    assert "already holds files" in capsys.readouterr().err


def test_ensemble_refuses_probabilities_of_other_source_files_under_one_name(tmp_path, folds, capsys):
    _gradient_png(tmp_path / "in_a" / "1.png")
    (tmp_path / "in_b").mkdir()
    Image.fromarray(np.full((40, 48), 7, dtype=np.uint8)).save(tmp_path / "in_b" / "1.png")
    assert _infer(tmp_path / "in_a", tmp_path / "a", folds[1], "--save-probabilities") == 0
    assert _infer(tmp_path / "in_b", tmp_path / "b", folds[1], "--save-probabilities") == 0
    assert _ensemble("--inputs", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "e")) == 1
    assert "not the same slice" in capsys.readouterr().err and not (tmp_path / "e" / "1_seg.nii.gz").exists()


@pytest.mark.parametrize("fault", ["nan", "above one", "empty", "truncated"])
def test_a_bad_probability_fails_its_slice_alone_and_leaves_no_mask_behind(tmp_path, two_runs, fault, capsys):
    output = tmp_path / "e"
    assert _ensemble("--inputs", *map(str, two_runs), "--output", str(output)) == 0
    bad = two_runs[1] / "1_prob.nii.gz"
    image = nib.load(bad)
    values = np.asarray(image.dataobj, dtype=np.float32)
    if fault in ("nan", "above one"):
        values[3, 4] = np.nan if fault == "nan" else 1.5
        nib.save(nib.Nifti1Image(values, image.affine), bad)
    else:
        bad.write_bytes(b"" if fault == "empty" else bad.read_bytes()[:60])
    assert _ensemble("--inputs", *map(str, two_runs), "--output", str(output), "--overwrite") == 1
    assert str(bad) in capsys.readouterr().err
    entries = {
        Path(entry["input"]).name: entry
        for entry in json.loads((output / "inference_record.json").read_text())["inputs"]
    }
    assert entries["1.png"]["status"] == "failed" and str(bad) in entries["1.png"]["reason"]
    assert not (output / "1_seg.nii.gz").exists()  # the earlier run's mask is gone, not passed off as this one's
    assert entries["0.png"]["status"] == entries["2.png"]["status"] == "written"
