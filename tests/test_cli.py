"""`python -m pipeline`: every fault the user can fix is one `error:` line and exit code 1, and nothing is written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from pipeline import default_bundle_dir
from pipeline.__main__ import build_parser, main
from pipeline.bundle_configs import bundle_config_files, merged_config
from pipeline.checkpoints.model_config import check_overrides_agree, read_model_config
from pipeline.commands import synth
from pipeline.overrides import flag_overrides, parse_overrides
from pipeline.user_errors import UserError, find_user_error
from pipeline.workflow import check_bundle_overrides


def error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_train_without_a_datalist_says_how_to_write_one_and_creates_no_folder(tmp_path, capsys):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    run = tmp_path / "run"
    folders = ["--ckpt_dir", str(run / "models"), "--output_dir", str(run / "eval")]
    assert main(["train", "--dataset-dir", str(dataset), *folders]) == 1
    assert error_lines(capsys) == [
        f"error: {dataset / 'datalist.json'}: not found; write it with `python -m pipeline prepare --src SLICES "
        f"--out {dataset}`"
    ]
    assert not run.exists()


def test_a_mistyped_override_names_the_nearest_key_and_nothing_is_written(tmp_path, capsys):
    source = tmp_path / "1.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(source)
    output = tmp_path / "masks"
    assert main(["infer", "--input", str(source), "--output", str(output), "--imagesize", "32"]) == 1
    assert error_lines(capsys) == ["error: unknown override --imagesize; did you mean --image_size?"]
    assert not output.exists()


def test_every_override_that_does_not_fit_is_named_at_once(tmp_path, capsys):
    source = tmp_path / "1.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(source)
    argv = ["infer", "--input", str(source), "--output", str(tmp_path / "masks"), "--save_overlay", "false"]
    assert main([*argv, "--image_size", "large", "--flip_tta", "1"]) == 1
    assert error_lines(capsys) == [
        "error: 3 overrides do not fit the bundle config:",
        "override --flip_tta 1: expected true or false, as the config has",
        "unknown override --save_overlay; did you mean --save_overlays?",
        'override --image_size "large": expected an integer, as the config has',
    ]


def test_check_and_export_refuse_a_mistyped_override_before_any_work(tmp_path, capsys):
    for command in (["check"], ["export", "--dist", str(tmp_path / "dist")]):
        assert main([*command, "--image_sise", "64"]) == 1
        assert error_lines(capsys) == ["error: unknown override --image_sise; did you mean --image_size?"]
    assert not (tmp_path / "dist").exists()


def test_synth_names_the_flag_and_its_minimum_and_writes_nothing(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "phantoms"), "--size", "64"]) == 1
    assert error_lines(capsys) == ["error: --size must be at least 128, got 64"]
    assert not (tmp_path / "phantoms").exists()


def test_synth_help_states_the_minimum_size(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "at least 128 (default: 512)" in " ".join(capsys.readouterr().out.split())


def test_prepare_explains_where_loose_png_files_belong(tmp_path, capsys):
    src = tmp_path / "pngs"
    src.mkdir()
    for name in ("1.png", "2.png"):
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(src / name)
    assert main(["prepare", "--src", str(src), "--out", str(tmp_path / "dataset")]) == 1
    (line,) = error_lines(capsys)
    assert line.startswith(f"error: {src}: 2 image files but no images/ folder")
    assert f"{src / 'images'}/" in line and f"{src / 'masks'}/" in line and "--meta CSV" in line
    assert not (tmp_path / "dataset").exists()


def test_fetch_weights_names_a_missing_bundle_folder(tmp_path, capsys):
    assert main(["fetch-weights", "--bundle", str(tmp_path / "nowhere")]) == 1
    assert error_lines(capsys) == [f"error: {tmp_path / 'nowhere'}: no such bundle folder; pass --bundle BUNDLE_FOLDER"]


def test_fetch_weights_says_when_the_bundle_lists_nothing_to_fetch(tmp_path, capsys):
    (tmp_path / "large_files.yml").write_text("large_files: []\n")
    assert main(["fetch-weights", "--bundle", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"nothing to fetch: {tmp_path / 'large_files.yml'} lists no weights")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["large_files.yml"]


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--size must be at least 128"):
        main(["--debug", "synth", "--out", str(tmp_path), "--size", "64"])


def test_a_programming_error_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(synth, "run", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["synth", "--out", str(tmp_path)])


def test_a_user_error_is_found_behind_the_errors_monai_wraps_it_in():
    original = UserError("the fault")
    raised_from, raised_while_handling, hidden = (RuntimeError("Failed to evaluate ...") for _ in range(3))
    raised_from.__cause__ = original
    raised_while_handling.__context__ = original
    hidden.__context__, hidden.__suppress_context__ = original, True  # `raise ... from None`
    assert find_user_error(raised_from) is original
    assert find_user_error(raised_while_handling) is original
    assert find_user_error(hidden) is None


def test_building_the_command_line_imports_neither_monai_nor_torch():
    code = (
        "import json, sys; from pipeline.__main__ import build_parser; build_parser(); "
        "print(json.dumps(sorted(name for name in ('monai', 'torch') if name in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert json.loads(result.stdout) == []


def test_a_mistyped_flag_of_the_command_names_the_flag_and_nothing_is_written(tmp_path, capsys):
    source = tmp_path / "1.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(source)
    output = tmp_path / "masks"
    assert main(["infer", "--input", str(source), "--output", str(output), "--fromat", "png"]) == 1
    assert error_lines(capsys) == ["error: unknown option --fromat; did you mean --format?"]
    assert main(["infer", "--input", str(source), "--output", str(output), "--no-ovrlays"]) == 1
    assert error_lines(capsys) == ["error: unknown option --no-ovrlays; did you mean --no-overlays?"]
    assert main(["prepare", "--src", str(tmp_path), "--out", str(tmp_path / "dataset"), "--sed", "3"]) == 1
    assert error_lines(capsys) == ["error: unknown option --sed; did you mean --seed?"]
    assert not output.exists() and not (tmp_path / "dataset").exists()


def test_a_command_line_argparse_refuses_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["infer", "--input", "slices", "--output", "masks", "--format", "jpg"])
    assert stop.value.code == 2
    assert error_lines(capsys) == [
        "error: argument --format: invalid choice: 'jpg' (choose from 'nii.gz', 'png'); "
        "`python -m pipeline infer --help` lists the options"
    ]


def test_an_error_after_the_bundle_config_is_read_is_the_only_line_printed(tmp_path):
    source = tmp_path / "1.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(source)
    empty = tmp_path / "no_model"
    empty.mkdir()
    command = [sys.executable, "-m", "pipeline", "infer", "--input", str(source), "--output", str(tmp_path / "out")]
    result = subprocess.run(
        [*command, "--ckpt-dir", str(empty), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"error: {empty / 'model.pt'}: no trained weights here")


@pytest.mark.parametrize("fault", ["missing input", "bad override"])
def test_a_command_error_is_one_error_line_with_no_log_line_before_it(tmp_path, fault):
    source = tmp_path / "1.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(source)
    output = tmp_path / "out"
    if fault == "missing input":
        arguments, expected = (
            ["--input", str(tmp_path / "missing")],
            f"error: {tmp_path / 'missing'}: no such file or folder",
        )
    else:
        arguments, expected = (
            ["--input", str(source), "--imagesize", "32"],
            ("error: unknown override --imagesize; did you mean --image_size?"),
        )
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "infer", "--output", str(output), "--device", "cpu", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected]
    assert not output.exists()


def test_ckpt_dir_is_spelt_with_a_hyphen_accepts_the_underscore_and_is_listed_in_the_help(capsys):
    parser = build_parser()
    for spelling in ("--ckpt-dir", "--ckpt_dir"):
        args, extra = parser.parse_known_args(["infer", "--input", "a", "--output", "b", spelling, "runs/cpu"])
        assert extra == [] and flag_overrides(args) == ["--ckpt_dir", "runs/cpu"]
    for spelling in ("--dataset-dir", "--dataset_dir"):
        args, extra = parser.parse_known_args(["evaluate", spelling, "data", "--ckpt-dir", "runs/cpu"])
        assert extra == [] and args.dataset_dir == Path("data")
    for command in ("train", "evaluate", "infer", "dicom", "dicomweb"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--ckpt-dir CKPT_DIR, --ckpt_dir CKPT_DIR" in capsys.readouterr().out


# The configs each command checks its overrides against (model_config.json merged last where the command runs a
# trained model).
COMMAND_CONFIGS = {
    "train": (["train.json"], False),
    "crossval": (["train.json"], False),
    "demo": (["train.json", "evaluate.json"], False),
    "evaluate": (["train.json", "evaluate.json"], True),
    "infer": (["inference.json"], True),
    "dicom": (["inference.json"], True),
    "dicomweb": (["inference.json"], True),
    "ensemble": (["inference.json"], True),
}


@pytest.mark.parametrize("command", COMMAND_CONFIGS)
def test_the_override_example_of_each_help_is_accepted_by_its_command(command):
    epilog = build_parser()._subparsers._group_actions[0].choices[command].epilog
    example = re.search(r"e\.g\. (.*?) \(VALUE", " ".join(epilog.split()))[1]
    overrides = parse_overrides(example.split())
    configs, trained = COMMAND_CONFIGS[command]
    check_bundle_overrides(default_bundle_dir(), configs, overrides)
    if trained:
        models = default_bundle_dir() / "models"
        check_overrides_agree(read_model_config(models), overrides, models / "model_config.json")


@pytest.mark.parametrize("config", ["inference.json", "train.json"])
def test_a_boolean_switch_given_as_a_word_through_monai_s_command_line_is_refused_in_one_line(config):
    bundle = default_bundle_dir()
    files = [str(path) for path in bundle_config_files(bundle, [config])]
    workflow = ConfigWorkflow(
        config_file=files,
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer" if config == "inference.json" else "train",
        bundle_root=str(bundle),
        flip_tta="false",
        fill_holes=False,
    )
    with pytest.raises(Exception) as raised:
        workflow.initialize()
        workflow.run()
    assert str(find_user_error(raised.value)) == (
        "--flip_tta 'false': expected a boolean; MONAI's command line reads True and False as booleans and keeps any "
        "other word as a string"
    )


def test_the_pipeline_command_line_reads_true_and_false_in_either_spelling():
    words = ["--flip_tta", "False", "--fill_holes", "false", "--save_overlays", "True", "--threshold", "0.4"]
    assert parse_overrides(words) == {"flip_tta": False, "fill_holes": False, "save_overlays": True, "threshold": 0.4}


@pytest.mark.parametrize("config", ["inference.json", "train.json"])
def test_every_boolean_key_of_a_config_is_one_of_its_checked_switches(config):
    merged = merged_config(bundle_config_files(default_bundle_dir(), [config]))
    booleans = {key for key, value in merged.items() if isinstance(value, bool)}
    assert booleans == set(merged["switches"])


def test_serve_and_dicomweb_name_a_missing_file_in_one_line_before_loading_anything(tmp_path, capsys):
    missing = tmp_path / "node.yaml"
    assert main(["serve", "--config", str(missing)]) == 1
    assert error_lines(capsys) == [f"error: {missing}: no such file or folder"]
    arguments = ["dicomweb", "--url", "http://127.0.0.1:1/dicom-web", "--study-uid", "1.2", "--output", str(tmp_path)]
    assert main([*arguments, "--auth-file", str(tmp_path / "auth")]) == 1
    assert error_lines(capsys) == [f"error: {tmp_path / 'auth'}: no such file or folder"]
    assert main(["serve", "--config", str(missing), "--stauts"]) == 1
    assert error_lines(capsys) == ["error: unknown option --stauts; did you mean --status?"]
