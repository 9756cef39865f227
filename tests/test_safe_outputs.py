"""Every writer's promises against hostile and careless input: no output outside the output folder whatever a
header says, one bad input never stops the others, a full disk ends the run in one line with a truthful record,
and ``--continue`` keeps only what a record vouches for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from test_dicom_series import axial_stack, save
from tiny_bundle import THRESHOLD_NETWORK, phantom_dataset

from pipeline.__main__ import main
from pipeline.atomic import TEMPORARY_NAME
from pipeline.dicom.pacs import SeriesInfo
from pipeline.dicom.series import read_dicom_folder
from pipeline.phantoms.dicom_series import write_phantom_series
from pipeline.phantoms.slices import synthesize_dataset


def _infer(source: Path, output: Path, ckpt_dir: Path, *options: str) -> int:
    arguments = ["infer", "--input", str(source), "--output", str(output), "--device", "cpu", *options]
    arguments += ["--ckpt_dir", str(ckpt_dir), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]
    return main([*arguments, "--num_workers", "0"])


def _record(output: Path) -> dict:
    return json.loads((output / "inference_record.json").read_text())


def _entries(output: Path) -> dict[str, dict]:
    return {Path(entry["input"]).name: entry for entry in _record(output)["inputs"]}


def _grey(path: Path, mode: str = "L") -> Path:
    image = np.zeros((40, 48), dtype=np.uint8)
    image[:, :24] = 220
    grey = Image.fromarray(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    (grey if mode == "L" else grey.convert(mode)).save(path)
    return path


def _files_below(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("key, value", [("output_dir", "elsewhere"), ("data_root_dir", "elsewhere")])
def test_an_override_of_a_folder_infer_sets_itself_is_refused_and_nothing_is_written(
    tmp_path, ckpt_dir, capsys, key, value
):
    source = _grey(tmp_path / "data" / "a.png")
    assert _infer(source, tmp_path / "out", ckpt_dir, f"--{key}", str(tmp_path / value)) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: --{key}: this command sets it from --") and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / value).exists()
    assert _files_below(tmp_path / "data") == {source}


@pytest.mark.parametrize("hostile_uid", ["../../../escaped", "{tmp}/escaped-absolute", "..", "a/../../b"])
def test_a_series_uid_that_tries_to_escape_writes_only_inside_the_output_folder(tmp_path, ckpt_dir, hostile_uid):
    source, output = tmp_path / "deep" / "in", tmp_path / "deep" / "out"
    hostile_uid = hostile_uid.format(tmp=tmp_path)
    for path in write_phantom_series(source, patients=1, slices=2, size=128, seed=0):
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = dataset.StudyInstanceUID = hostile_uid
        save(dataset, path)
    assert _infer(source, output, ckpt_dir, "--nifti-copy", "--recursive") == 0
    outside = {path for path in _files_below(tmp_path) if not path.is_relative_to(output)}
    assert outside == _files_below(source) | {ckpt_dir / "model.pt"}
    (entry,) = _record(output)["inputs"]
    assert entry["status"] == "written" and all(Path(path).is_relative_to(output) for path in entry["outputs"])
    seg = pydicom.dcmread(entry["outputs"][0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == hostile_uid  # the header value is kept, as data


def test_colour_and_alpha_pngs_are_read_as_grey_and_recorded_so_while_the_others_are_segmented(
    tmp_path, ckpt_dir, capsys
):
    for mode in ("L", "RGB", "RGBA", "LA", "P"):
        _grey(tmp_path / "in" / f"{mode}.png", mode)
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--no-overlays") == 0
    record = _record(tmp_path / "out")
    assert record["state"] == "finished"
    entries = _entries(tmp_path / "out")
    expected = np.asarray(nib.load(tmp_path / "out" / "L_seg.nii.gz").dataobj)
    assert expected.sum() > 0
    for mode in ("RGB", "RGBA", "LA", "P"):
        assert entries[f"{mode}.png"]["status"] == "written"
        assert f"read as greyscale from its {mode} pixels" in entries[f"{mode}.png"]["note"]
        mask = np.asarray(nib.load(tmp_path / "out" / f"{mode}_seg.nii.gz").dataobj)
        np.testing.assert_array_equal(mask, expected)
    assert entries["L.png"]["note"] == ""
    assert "note: 4 inputs were read otherwise than stored" in capsys.readouterr().out


def test_a_failure_inside_the_network_is_recorded_for_that_slice_and_the_others_are_written(tmp_path, capsys):
    import torch

    # Without the resize, a 41x41 convolution takes the 48x48 slice and fails on the 40x40 one.
    models = tmp_path / "models"
    models.mkdir()
    torch.save(torch.nn.Conv2d(1, 2, kernel_size=41).state_dict(), models / "model.pt")
    _grey(tmp_path / "in" / "good.png")
    with Image.open(_grey(tmp_path / "in" / "bad.png")) as image:
        image.resize((40, 40)).save(tmp_path / "in" / "bad.png")
    Image.fromarray(np.full((48, 48), 100, dtype=np.uint8)).save(tmp_path / "in" / "good.png")
    network = json.dumps({"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 41})
    arguments = ["infer", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    arguments += ["--no-overlays", "--no-postprocessing", "--ckpt_dir", str(models), "--network_def", network]
    unresized = [{"_target_": "EnsureChannelFirstd", "keys": "image"}, {"_target_": "EnsureTyped", "keys": "image"}]
    arguments += ["--num_workers", "0", "--slice_transforms", json.dumps(unresized), "--no-tta"]
    assert main(arguments) == 1
    assert "bad.png" in capsys.readouterr().err
    entries, record = _entries(tmp_path / "out"), _record(tmp_path / "out")
    assert record["state"] == "finished"
    assert entries["good.png"]["status"] == "written" and (tmp_path / "out" / "good_seg.nii.gz").is_file()
    assert entries["bad.png"]["status"] == "failed"
    assert entries["bad.png"]["reason"].startswith(str(tmp_path / "in" / "bad.png"))
    assert not (tmp_path / "out" / "bad_seg.nii.gz").exists()


def test_a_2d_slice_stored_as_x_y_1_nifti_with_nan_is_refused_not_written_empty(tmp_path, ckpt_dir, capsys):
    values = np.zeros((40, 48, 1), dtype=np.float32)
    values[:, :24] = 200
    values[3, 30, 0] = np.nan
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "in" / "nan.nii.gz")
    _grey(tmp_path / "in" / "good.png")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--no-overlays") == 1
    entry = _entries(tmp_path / "out")["nan.nii.gz"]
    assert entry["status"] == "failed" and "NaN or infinite" in entry["reason"]
    assert not (tmp_path / "out" / "nan_seg.nii.gz").exists()
    assert _entries(tmp_path / "out")["good.png"]["status"] == "written"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 160 KiB tmpfs, or a skip where this process may not mount one."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_ends_the_run_in_one_line_with_the_record_failed_and_no_temporaries(
    tmp_path, ckpt_dir, small_tmpfs, capsys, monkeypatch
):
    # The disk is full only once the run has begun (another process filled it): the start-up check passes.
    monkeypatch.setattr("pipeline.preflight.INFER_MIN_FREE_BYTES", 0)
    for index in range(12):
        noise = np.random.default_rng(index).integers(0, 255, (256, 256), dtype=np.uint8)
        Image.fromarray(noise).save(_grey(tmp_path / "in" / f"{index:02}.png"))
    output = small_tmpfs / "out"
    assert _infer(tmp_path / "in", output, ckpt_dir, "--no-overlays", "--save-probabilities", "--quiet") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "no space left" in errors[0], errors
    assert str(output) in errors[0]
    record = _record(output)
    assert record["state"] == "failed" and "no space left" in record["error"]
    assert not [path for path in _files_below(output) if TEMPORARY_NAME.fullmatch(path.name)]
    written = [entry for entry in record["inputs"] if entry["status"] == "written"]
    assert all(Path(path).is_file() for entry in written for path in entry["outputs"])


def test_continue_without_an_earlier_record_refuses(tmp_path, ckpt_dir, capsys):
    _grey(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_seg.nii.gz").write_bytes((tmp_path / "in" / "a.png").read_bytes())
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--continue") == 1
    error = capsys.readouterr().err
    assert "no inference_record.json" in error and "--continue" in error


def test_continue_after_a_killed_overwrite_redoes_what_the_killed_run_had_not_written(tmp_path, ckpt_dir):
    for name in ("a.png", "b.png"):
        _grey(tmp_path / "in" / name)
    output = tmp_path / "out"
    assert _infer(tmp_path / "in", output, ckpt_dir, "--no-overlays") == 0
    old_b = (output / "b_seg.nii.gz").read_bytes()
    # What an `--overwrite --threshold 0.99` run killed after its first slice leaves: its record says a is
    # written, b pending, while b's mask is still the earlier run's.
    record = _record(output)
    record["state"] = "running"
    record["settings"]["threshold"] = record["settings"]["overrides"]["threshold"] = 0.99
    for entry in record["inputs"]:
        entry["status"] = "written" if entry["input"].endswith("a.png") else "pending"
    (output / "inference_record.json").write_text(json.dumps(record))
    assert _infer(tmp_path / "in", output, ckpt_dir, "--no-overlays", "--continue", "--threshold", "0.99") == 0
    statuses = {name: entry["status"] for name, entry in _entries(output).items()}
    assert statuses == {"a.png": "skipped", "b.png": "written"}
    assert (output / "b_seg.nii.gz").read_bytes() != old_b  # made again with 0.99: every pixel is below it


def test_continue_compares_every_override_that_changes_the_outputs(tmp_path, ckpt_dir, capsys):
    _grey(tmp_path / "in" / "a.png")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--no-overlays") == 0
    capsys.readouterr()
    assert (
        _infer(
            tmp_path / "in",
            tmp_path / "out",
            ckpt_dir,
            "--no-overlays",
            "--continue",
            "--mask_transforms#0#threshold",
            "0.99",
        )
        == 1
    )
    error = capsys.readouterr().err
    assert "mask_transforms#0#threshold" in error and "--continue would keep outputs made otherwise" in error


def test_an_output_folder_that_is_the_input_folder_is_refused_saying_so(tmp_path, ckpt_dir, capsys):
    _grey(tmp_path / "in" / "a.png")
    assert _infer(tmp_path / "in", tmp_path / "in", ckpt_dir, "--overwrite") == 1
    assert "the output folder is the input folder" in capsys.readouterr().err
    assert _infer(tmp_path / "in" / "a.png", tmp_path, ckpt_dir, "--overwrite") == 1
    assert "the output folder holds the input" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "in").iterdir()) == ["a.png"]


def test_a_link_to_a_device_file_is_recorded_as_skipped_with_the_reason(tmp_path, ckpt_dir):
    _grey(tmp_path / "in" / "a.png")
    os.symlink("/dev/zero", tmp_path / "in" / "zero.png")
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--no-overlays") == 0
    entry = _entries(tmp_path / "out")["zero.png"]
    assert entry["status"] == "skipped" and "not a regular file" in entry["reason"] and "device" in entry["reason"]


def test_a_duplicate_sop_instance_uid_with_other_pixels_is_not_called_a_copy(tmp_path):
    first, *_ = axial_stack(tmp_path, "1.2.1")
    other = pydicom.dcmread(first)
    other.PixelData = (np.asarray(other.pixel_array) + 7).astype("<i2").tobytes()
    save(other, tmp_path / "zz_other.dcm")
    (series,), (failure,) = read_dicom_folder(tmp_path)
    assert "a copy" not in failure and "different pixel data" in failure
    assert failure.startswith(str(tmp_path / "zz_other.dcm"))


def test_a_series_description_that_forges_an_error_line_is_printed_escaped_on_one_line(tmp_path, ckpt_dir, capsys):
    paths = write_phantom_series(tmp_path / "in", patients=1, slices=3, size=128, seed=0)
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.SeriesDescription = "T1\nerror: forged\x00\x1b[2J" + "A" * 300
        if path == paths[1]:
            dataset.ImagePositionPatient = [0.0, 0.0, 500.0]  # a gap: the series is refused, naming itself
        save(dataset, path)
    assert _infer(tmp_path / "in", tmp_path / "out", ckpt_dir, "--recursive") == 1
    error = capsys.readouterr().err
    assert "T1\\nerror: forged\\x00\\x1b[2J" in error and "inconsistent geometry" in error
    assert not any(line.startswith("error: forged") for line in error.splitlines())
    assert "\x00" not in error and "\x1b" not in error and "A" * 200 not in error


def test_a_remote_series_label_holds_no_control_character():
    series = SeriesInfo("1.2", "1.2.3\nerror: uid", "MR", "5\r\nerror: number", "T1\x00\x1b[2J\nerror: x", 3)
    assert series.label == "series 5\\r\\nerror: number 'T1\\x00\\x1b[2J\\nerror: x' (1.2.3\\nerror: uid)"


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize(
    "content",
    [b"{bad", b"\xff\xfe", b"[1, 2]", b'{"training": [{"image": "a.png"}], "validation": [], "test": [3]}'],
)
def test_a_damaged_datalist_is_one_error_line_before_any_work(tmp_path, capsys, command, content):
    (tmp_path / "datalist.json").write_bytes(content)
    arguments = [command, "--dataset-dir", str(tmp_path), "--ckpt_dir", str(tmp_path / "models"), "--device", "cpu"]
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path / 'datalist.json'}: ") and len(error.splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["datalist.json"]


@pytest.mark.parametrize("below", ["", "sub/folder"])
@pytest.mark.parametrize("command", ["synth", "prepare", "download"])
def test_an_output_folder_with_a_file_in_its_place_is_one_error_line(tmp_path, capsys, command, below):
    in_the_way = tmp_path / "meta.csv"
    in_the_way.write_text("index,pid\n")
    out = in_the_way / below if below else in_the_way
    if command == "prepare":
        synthesize_dataset(tmp_path / "mats", patients=3, slices_per_patient=1, size=128, seed=0)
        options = ["--src", str(tmp_path / "mats"), "--val-fold", "1"]
    elif command == "download":
        options = ["--mirror", str(tmp_path)]
    else:
        options = ["--patients", "1", "--slices", "1", "--size", "128"]
    assert main([command, "--out", str(out), *options]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {out}: cannot write here (") and len(error.splitlines()) == 1
    assert in_the_way.read_text() == "index,pid\n"


@pytest.mark.parametrize("content", [b"large_files: [\n  - path", b"\xff\xfe"])
def test_a_damaged_large_files_yml_is_one_error_line(tmp_path, capsys, content):
    (tmp_path / "large_files.yml").write_bytes(content)
    assert main(["fetch-weights", "--bundle", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path / 'large_files.yml'}: cannot be read as YAML (")
    assert len(error.splitlines()) == 1


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_datalist_naming_a_named_pipe_is_refused_without_opening_it(tmp_path, capsys, command):
    os.mkfifo(tmp_path / "pipe.png")
    entry = {"image": "pipe.png", "label": "pipe.png"}
    datalist = {"training": [entry], "validation": [entry], "test": [entry]}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    arguments = [command, "--dataset-dir", str(tmp_path), "--ckpt_dir", str(tmp_path / "models"), "--device", "cpu"]
    assert main([*arguments, "--num_workers", "0"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path / 'pipe.png'}: not a regular file (a named pipe)")


@pytest.mark.parametrize("lists, said", [({"test": []}, "the 'test' list is empty"), ({}, "no 'test' list")])
def test_evaluate_on_a_split_with_no_slices_is_one_error_line_naming_the_split(tmp_path, capsys, lists, said):
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [], "validation": [], **lists}))
    arguments = ["evaluate", "--dataset-dir", str(tmp_path), "--split", "test", "--device", "cpu"]
    assert main([*arguments, "--ckpt_dir", str(tmp_path / "models")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path / 'datalist.json'}: {said}") and len(error.splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["datalist.json"]


@pytest.mark.parametrize("command, split", [("train", "training"), ("evaluate", "test")])
def test_an_output_folder_holding_the_dataset_s_slices_is_refused_before_anything_is_written(
    tmp_path, capsys, command, split
):
    dataset = phantom_dataset(tmp_path, seed=0)
    entry = json.loads((dataset / "datalist.json").read_text())[split][0]
    slices = (dataset / entry["image"]).resolve().parent
    before = sorted(slices.iterdir())
    arguments = [command, "--dataset-dir", str(dataset), "--ckpt_dir", str(tmp_path / "models")]
    assert main([*arguments, "--output_dir", str(slices), "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert (
        error == f"error: {slices}: holds the dataset's slices ({dataset / 'datalist.json'}); choose a folder "
        "outside them for the outputs\n"
    )
    assert sorted(slices.iterdir()) == before and not (tmp_path / "models").exists()


@pytest.fixture
def no_hang():
    """Fail, instead of blocking the suite, a command that waits on a named pipe."""

    def give_up(signum, frame):
        raise TimeoutError("the command blocked on its input")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("special", ["pipe", "device"])
@pytest.mark.parametrize("command", ["prepare --meta", "prepare --folds", "serve --config", "dicomweb --auth-file"])
def test_an_option_file_that_is_a_pipe_or_a_device_is_refused_without_reading_it(
    tmp_path, capsys, no_hang, command, special
):
    path = tmp_path / "option-file"
    if special == "pipe":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    synthesize_dataset(tmp_path / "mats", patients=3, slices_per_patient=1, size=128, seed=0)
    name, flag = command.split()
    arguments = {
        "prepare": ["--src", str(tmp_path / "mats"), "--out", str(tmp_path / "out"), "--val-fold", "1"],
        "serve": ["--status"],
        "dicomweb": ["--url", "http://127.0.0.1:9/dicom-web", "--study-uid", "1.2", "--output", str(tmp_path / "out")],
    }[name]
    assert main([name, flag, str(path), *arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {path}: not a regular file") and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_ensemble_input_whose_record_is_a_pipe_is_refused_without_reading_it(tmp_path, capsys, no_hang):
    run = tmp_path / "run"
    run.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), run / "a_prob.nii.gz")
    os.mkfifo(run / "inference_record.json")
    assert main(["ensemble", "--inputs", str(run), str(run), "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {run / 'inference_record.json'}: not a regular file (a named pipe)")


@pytest.mark.parametrize("command", ["serve --config", "dicomweb --auth-file"])
def test_an_option_file_that_is_not_utf8_is_one_error_line(tmp_path, capsys, command):
    path = tmp_path / "option-file"
    path.write_bytes(b"\xff\xfe\x00bad")
    path.chmod(0o600)
    name, flag = command.split()
    arguments = {
        "serve": ["--status"],
        "dicomweb": ["--url", "http://127.0.0.1:9/dicom-web", "--study-uid", "1.2", "--output", str(tmp_path / "out")],
    }[name]
    assert main([name, flag, str(path), *arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {path}: cannot read ") and "not UTF-8 text" in error
    assert len(error.splitlines()) == 1
