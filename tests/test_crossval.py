"""Cross-validation: each fold trains without its patients, resumes where it stopped, scores its own fold, and the
fold models join into the shipped ensemble."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from tiny_bundle import TINY_TRAINING

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.export.package import sha256_of
from pipeline.outputs import UnsafeOutputPathError
from pipeline.phantoms.slices import synthesize_dataset
from pipeline.reports.crossval_summary import crossval_table
from pipeline.training.crossval import fold_paths, run_crossval


def _overrides() -> list[str]:
    pairs = {key: value for key, value in TINY_TRAINING.items() if key != "device"}
    return ["--device", "cpu", *(item for key, value in pairs.items() for item in (f"--{key}", json.dumps(value)))]


def test_crossval_scores_every_slice_with_the_model_that_never_saw_its_patient(tmp_path, capsys):
    synthesize_dataset(tmp_path / "raw", patients=10, slices_per_patient=2, size=128, seed=5)
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle, ignore=shutil.ignore_patterns("eval", "dist", "runs"))
    out = tmp_path / "cv"
    command = ["crossval", "--out", str(out), "--src", str(tmp_path / "raw"), "--folds", "1", "2"]
    assert main([*command, "--bundle", str(bundle), *_overrides()]) == 0

    with open(out / "crossval_per_slice.csv", newline="") as handle:
        scored = list(csv.DictReader(handle))
    for fold in (1, 2):
        datalist = json.loads((out / f"fold_{fold}" / "datalist.json").read_text())
        validated = {Path(item["image"]).name for item in datalist["validation"]}
        trained_on = {item["pid"] for item in datalist["training"]}
        rows = [row for row in scored if row["fold"] == str(fold)]
        assert {Path(row["filename"]).name for row in rows} == validated and len(rows) == len(validated)
        assert not trained_on & {row["pid"] for row in rows}
    summary = json.loads((out / "crossval_summary.json").read_text())
    assert summary["folds_scored"] == [1, 2] and summary["table"]["pooled"]["all"]["slices"] == len(scored)
    assert (out / "crossval_learning_curves.png").stat().st_size > 0

    final = out / "fold_1" / "final" / "model.pt"
    written = final.stat().st_mtime_ns
    shipped_weights = bundle / "models" / "model.pt"
    before = sha256_of(shipped_weights)
    capsys.readouterr()
    assert main([*command, "--bundle", str(bundle), "--ship", *_overrides()]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {shipped_weights}: the bundle ships the ensemble of folds 1, 2, 3, 4; shipping folds 1, 2 would drop "
        "folds 3, 4; pass --overwrite to replace it"
    ]
    assert sha256_of(shipped_weights) == before
    assert main([*command, "--bundle", str(bundle), "--ship", "--overwrite", *_overrides()]) == 0
    assert final.stat().st_mtime_ns == written  # a finished fold is neither trained nor extracted again
    shipped = json.loads((bundle / "models" / "model_config.json").read_text())
    assert shipped["network_def"]["folds"] == [1, 2]
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert {name.split(".")[1] for name in state} == {"0", "1"}
    assert sha256_of(bundle / "models" / "model.pt") in (bundle / "large_files.yml").read_text()
    assert json.loads((bundle / "configs" / "inference.json").read_text())["network_def"] == shipped["network_def"]


def _latest(folder: Path, epoch: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": torch.nn.Linear(1, 1).state_dict()}, folder / f"latest_checkpoint_epoch={epoch}.pt")
    (folder / "model_config.json").write_text("{}")


def test_a_stopped_fold_resumes_and_a_finished_one_is_not_trained_again(tmp_path):
    folds = fold_paths(tmp_path, [1, 2, 3])
    _latest(folds[0].checkpoints, 4)  # finished: 4 of 4 epochs
    _latest(folds[1].checkpoints, 2)  # stopped after 2 epochs
    calls = []

    def train(fold, resume):
        calls.append((fold.fold, resume))
        _latest(fold.checkpoints, 4)

    def evaluate(fold):
        fold.validation.mkdir(parents=True)
        for name in ("per_slice.csv", "summary.json"):
            (fold.validation / name).write_text("")

    run_crossval(folds, train, evaluate, epochs=4)
    assert calls == [(2, True), (3, False)]
    assert all(fold.trained and fold.scored for fold in folds)
    run_crossval(folds, train, evaluate, epochs=4)
    assert calls == [(2, True), (3, False)]


def test_the_table_pools_the_folds_and_counts_each_patient_once():
    rows = [
        {"fold": 1, "pid": "a", "tumor_type_name": "glioma", "dice": 0.2, "hd95": 9.0},
        {"fold": 1, "pid": "a", "tumor_type_name": "glioma", "dice": 0.4, "hd95": float("nan")},
        {"fold": 1, "pid": "a", "tumor_type_name": "glioma", "dice": 0.6, "hd95": 3.0},
        {"fold": 2, "pid": "b", "tumor_type_name": "meningioma", "dice": 1.0, "hd95": 1.0},
    ]
    table = crossval_table(rows)
    assert set(table) == {"fold_1", "fold_2", "pooled"}
    pooled = table["pooled"]["all"]
    assert pooled["slices"] == 4 and pooled["patients"] == 2 and pooled["no_prediction"] == 1
    assert abs(pooled["dice_mean"] - 0.55) < 1e-9 and abs(pooled["patient_dice_mean"] - 0.7) < 1e-9
    assert table["fold_1"]["glioma"]["hd95_median"] == 6.0


def _fake_training(calls: list) -> tuple:
    """A ``train`` and an ``evaluate`` for ``run_crossval`` that write what the bundle's would, in the same folders."""

    def train(fold, resume):
        calls.append((fold.fold, resume))
        _latest(fold.checkpoints, 4)
        (fold.training_output / "tensorboard").mkdir(parents=True, exist_ok=True)
        (fold.training_output / "tensorboard" / "events.out.tfevents").write_text("")
        (fold.training_output / "learning_curve.csv").write_text("")

    def evaluate(fold):
        fold.validation.mkdir(parents=True, exist_ok=True)
        for name in ("per_slice.csv", "summary.json"):
            (fold.validation / name).write_text("")

    return train, evaluate


def test_a_link_planted_on_a_fold_file_is_replaced_not_written_through(tmp_path):
    folds = fold_paths(tmp_path / "cv", [1])
    outside = tmp_path / "user_file.json"
    outside.write_text("a user's file")
    planted = tmp_path / "cv" / "fold_1" / "final" / "model_config.json"
    planted.parent.mkdir(parents=True)
    planted.symlink_to(outside)
    run_crossval(folds, *_fake_training([]), epochs=4)
    assert outside.read_text() == "a user's file"
    assert not planted.is_symlink() and planted.read_text() == "{}"


@pytest.mark.parametrize(
    "planted",
    ["fold_1", "fold_1/models", "fold_1/eval", "fold_1/eval/tensorboard", "fold_1/final", "fold_1/validation"],
)
def test_a_fold_folder_that_is_a_link_is_refused_before_the_fold_writes(tmp_path, planted):
    folds = fold_paths(tmp_path / "cv", [1])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "mine.txt").write_text("a user's file")
    link = tmp_path / "cv" / planted
    link.parent.mkdir(parents=True)
    link.symlink_to(outside, target_is_directory=True)
    calls = []
    with pytest.raises(UnsafeOutputPathError, match=f"^{re.escape(str(link))}: refused: this output folder is a link"):
        run_crossval(folds, *_fake_training(calls), epochs=4)
    assert calls == [] and [path.name for path in outside.iterdir()] == ["mine.txt"]


def test_crossval_refuses_a_planted_fold_link_in_one_line_before_any_fold_is_prepared(tmp_path, capsys):
    synthesize_dataset(tmp_path / "raw", patients=10, slices_per_patient=2, size=128, seed=5)
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle, ignore=shutil.ignore_patterns("eval", "dist", "runs"))
    out, outside = tmp_path / "cv", tmp_path / "outside"
    outside.mkdir()
    link = out / "fold_2" / "models"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside, target_is_directory=True)
    command = ["crossval", "--out", str(out), "--src", str(tmp_path / "raw"), "--folds", "1", "2"]
    assert main([*command, "--bundle", str(bundle), *_overrides()]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {link}: refused: this output folder is a link (to {outside}); the command writes its own files there "
        "and does not follow links: remove it, or choose another output folder"
    ]
    assert list(outside.iterdir()) == [] and sorted(path.name for path in out.iterdir()) == ["fold_2"]
