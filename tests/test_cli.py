"""`python -m pipeline`: every fault the user can fix is one `error:` line and exit code 1, and nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.__main__ import main
from pipeline.commands import synth
from pipeline.user_errors import UserError, find_user_error


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
