"""Training never writes over an earlier run's weights or checkpoints unless told to, through either CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_bundle import TINY_TRAINING

from pipeline import default_bundle_dir
from pipeline.__main__ import main
from pipeline.checkpoints import EarlierRunError, guard_earlier_run

RELEASED = b"the released weights"


def _dataset(tmp_path: Path) -> Path:
    """A dataset folder with a datalist: the refusal comes before any slice is read."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "datalist.json").write_text(json.dumps({"training": [], "validation": [], "test": []}))
    return folder


def test_pipeline_train_refuses_a_folder_holding_a_trained_model_and_leaves_it_alone(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.pt").write_bytes(RELEASED)
    arguments = ["train", "--dataset-dir", str(_dataset(tmp_path)), "--device", "cpu"]
    arguments += ["--ckpt_dir", str(models), "--output_dir", str(tmp_path / "training")]
    assert main(arguments) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {models}: holds a trained model.pt") and "--overwrite" in line
    assert (models / "model.pt").read_bytes() == RELEASED
    assert sorted(path.name for path in models.iterdir()) == ["model.pt"]


def test_monai_bundle_run_of_the_training_config_refuses_to_replace_the_shipped_model(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle, ignore=shutil.ignore_patterns("dist", "eval", "__pycache__"))
    shipped = (bundle / "models" / "model.pt").read_bytes()
    command = [sys.executable, "-m", "monai.bundle", "run"]
    command += ["--config_file", "['configs/common.json','configs/train.json','configs/train_cpu.json']"]
    command += ["--dataset_dir", str(_dataset(tmp_path))]
    for key, value in TINY_TRAINING.items():
        command += [f"--{key}", value if isinstance(value, str) else repr(value)]
    result = subprocess.run(command, cwd=bundle, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith(f"error: {bundle.resolve() / 'models'}: holds a trained model.pt")
    assert "--overwrite True" in result.stderr and "Traceback" not in result.stderr
    assert (bundle / "models" / "model.pt").read_bytes() == shipped
    assert not list((bundle / "models").glob("latest_checkpoint*"))


def test_an_earlier_runs_checkpoints_are_kept_unless_the_run_resumes_or_overwrites(tmp_path):
    (tmp_path / "model.pt").write_bytes(RELEASED)
    (tmp_path / "latest_checkpoint_epoch=3.pt").write_bytes(b"state")
    with pytest.raises(EarlierRunError, match=r"latest_checkpoint_epoch=3\.pt\); pass --resume to continue it"):
        guard_earlier_run(tmp_path)
    guard_earlier_run(tmp_path, resume=True)
    assert (tmp_path / "latest_checkpoint_epoch=3.pt").is_file()
    guard_earlier_run(tmp_path, overwrite=True)
    # The new run's checkpoints are the only ones a later resume can find; the model stays until it is replaced.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize(
    ("resume", "overwrite", "fault"), [(True, True, "exclude each other"), (False, "false", "True or False")]
)
def test_resume_and_overwrite_must_be_one_boolean_at_most(tmp_path, resume, overwrite, fault):
    (tmp_path / "latest_checkpoint_epoch=1.pt").write_bytes(b"state")
    with pytest.raises(EarlierRunError, match=fault):
        guard_earlier_run(tmp_path, resume=resume, overwrite=overwrite)
    assert (tmp_path / "latest_checkpoint_epoch=1.pt").is_file()


def test_a_checkpoint_half_written_by_a_killed_run_is_removed_when_training_starts(tmp_path):
    import tempfile

    from pipeline.checkpoints import guard_earlier_run

    ckpt_dir = tmp_path / "models"
    ckpt_dir.mkdir()
    handle, left = tempfile.mkstemp(prefix=".", suffix="~latest_checkpoint_epoch=3.pt", dir=ckpt_dir)  # as saved
    os.close(handle)
    guard_earlier_run(ckpt_dir)
    assert not Path(left).exists()
