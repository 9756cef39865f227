"""Progress of long work: plain lines in a log (each tenth, at least every 30 s), a live bar on a terminal, nothing
with --quiet; training's bars only on a terminal; infer, ensemble, dicom and dicomweb report theirs."""

from __future__ import annotations

import argparse
import io
import json
import re

import numpy as np
import pytest
from ignite.engine import Engine
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK

from pipeline import default_bundle_dir, progress
from pipeline.__main__ import main
from pipeline.bundle_configs import bundle_parser
from pipeline.commands.dicom import segment_retrieved
from pipeline.handlers import ProgressReport
from pipeline.inference.predictor import BundlePredictor
from pipeline.overrides import quiet_override
from pipeline.phantoms.dicom_series import write_phantom_series
from pipeline.progress import Progress

RUNNING_LINE = re.compile(r"segmenting: (\d+)/20 slices, [\d.e+-]+ slices/s, about \d+m \d\ds left")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch) -> dict[str, float]:
    """The time ``pipeline.progress`` sees, moved on by hand."""
    now = {"s": 1000.0}
    monkeypatch.setattr(progress.time, "monotonic", lambda: now["s"])
    return now


def test_away_from_a_terminal_a_line_is_written_at_each_tenth_and_one_at_the_end(clock):
    log = io.StringIO()
    with Progress(20, "slices", "segmenting", stream=log) as report:
        for _ in range(20):
            clock["s"] += 0.5
            report.advance()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [int(RUNNING_LINE.fullmatch(line)[1]) for line in lines[:-1]] == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert lines[4] == "segmenting: 10/20 slices, 2 slices/s, about 0m 05s left"
    assert lines[-1] == "segmenting: 20 slices in 0m 10s"


def test_away_from_a_terminal_slow_work_gets_a_line_every_30_seconds(clock):
    log = io.StringIO()
    report = Progress(1000, "slices", "segmenting", stream=log)
    for seconds in (10, 25, 31, 5, 40):
        clock["s"] += seconds
        report.advance()
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == [
        "segmenting: 2/1000 slices",  # 35 s after the start
        "segmenting: 3/1000 slices",  # 31 s after that line
        "segmenting: 5/1000 slices",  # 45 s after that
    ]


def test_quiet_reports_nothing(clock):
    for stream in (io.StringIO(), Terminal()):
        with Progress(3, "slices", quiet=True, stream=stream) as report:
            report.advance(3)
        assert stream.getvalue() == ""


def test_on_a_terminal_a_bar_redraws_itself_with_the_count(clock):
    screen = Terminal()
    with Progress(4, "slices", "segmenting", stream=screen) as report:
        report.advance(4)
    assert "\r" in screen.getvalue() and "4/4" in screen.getvalue()
    assert "segmenting: 4 slices in" not in screen.getvalue()


def test_an_engine_reports_each_item_it_has_done(capsys, clock):
    engine = Engine(lambda engine, batch: None)
    ProgressReport(unit="slices", description="scoring").attach(engine)
    engine.run(list(range(20)), max_epochs=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[0].startswith("scoring: 2/20 slices, ") and lines[-1].startswith("scoring: 20 ")


@pytest.mark.parametrize("quiet", [False, True])
def test_evaluation_reports_its_progress_unless_quiet(quiet):
    config = bundle_parser(default_bundle_dir(), ["train.json", "evaluate.json"], quiet_override(quiet))
    handlers = config.get("validate#handlers")
    (index,) = [i for i, handler in enumerate(handlers) if "ProgressReport" in str(handler)]
    assert config.get_parsed_content(f"validate#handlers#{index}#_disabled_") is quiet


@pytest.mark.parametrize("terminal", [False, True])
def test_training_draws_bars_only_on_a_terminal(terminal, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: terminal)
    config = bundle_parser(default_bundle_dir(), ["train.json"])
    handlers = config.get("train#handlers")
    (index,) = [i for i, handler in enumerate(handlers) if "ignite.handlers.ProgressBar" in str(handler)]
    assert config.get_parsed_content(f"train#handlers#{index}#_disabled_") is not terminal
    assert config.get_parsed_content("train#dataset#progress") is terminal


def test_work_whose_size_is_learnt_late_or_is_nothing_is_reported_so(clock):
    log = io.StringIO()
    with Progress(None, "slices", "[1/2] segmenting", stream=log) as report:
        for done in (2, 4, 5):
            clock["s"] += 1.0
            report.advance_to(done, 5)
    lines = log.getvalue().splitlines()
    assert lines[0] == "[1/2] segmenting: 2/5 slices, 2 slices/s, about 0m 02s left"
    assert lines[-1] == "[1/2] segmenting: 5 slices in 0m 03s"
    for stream in (io.StringIO(), Terminal()):
        with Progress(0, "scans", "segmenting", stream=stream):
            pass
        assert stream.getvalue() == ""


def _lines(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


@pytest.mark.parametrize("quiet", [False, True])
def test_infer_and_ensemble_report_the_slices_done_in_a_log_unless_quiet(tmp_path, ckpt_dir, capsys, quiet):
    for index in range(3):
        (tmp_path / "in").mkdir(exist_ok=True)
        Image.fromarray(np.tile(np.linspace(0, 255, 48), (40, 1)).astype(np.uint8)).save(
            tmp_path / "in" / f"{index}.png"
        )
    options = ["--quiet"] if quiet else []
    arguments = ["infer", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "run"), "--device", "cpu"]
    arguments += ["--ckpt-dir", str(ckpt_dir), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]
    assert main([*arguments, "--num_workers", "0", "--no-overlays", "--save-probabilities", *options]) == 0
    log = capsys.readouterr().err
    assert "\r" not in log
    lines = _lines(log, "segmenting: ")
    assert (lines == []) if quiet else re.fullmatch(r"segmenting: 3 slices in 0m \d\ds", lines[-1])
    assert main(["ensemble", "--inputs", str(tmp_path / "run"), "--output", str(tmp_path / "ensemble"), *options]) == 0
    lines = _lines(capsys.readouterr().err, "averaging: ")
    assert (lines == []) if quiet else re.fullmatch(r"averaging: 3 slices in 0m \d\ds", lines[-1])


@pytest.mark.parametrize("quiet", [False, True])
def test_dicom_and_dicomweb_report_the_slices_of_each_series_unless_quiet(tmp_path, ckpt_dir, capsys, quiet):
    overrides = {"ckpt_dir": str(ckpt_dir), "network_def": THRESHOLD_NETWORK, "image_size": 32}
    segmenter = BundlePredictor(default_bundle_dir(), {**overrides, "device": "$torch.device('cpu')"}).build()
    segmenter = segmenter.slice_segmenter
    segmenter.batch_size = 2
    write_phantom_series(tmp_path / "series", patients=1, slices=5, size=128, seed=3)
    args = argparse.Namespace(quiet=quiet, nifti_copy=False)
    written, problems = segment_retrieved(tmp_path / "series", tmp_path / "segs", segmenter, args, "[1/1]")
    assert problems == [] and [path.suffix for path in written] == [".dcm"]
    assert segmenter.on_slices is None
    lines = _lines(capsys.readouterr().err, "[1/1] segmenting: ")
    if quiet:
        assert lines == []
    else:
        assert [line.split(",")[0] for line in lines[:-1]] == [
            "[1/1] segmenting: 2/5 slices",
            "[1/1] segmenting: 4/5 slices",
        ]
        assert re.fullmatch(r"\[1/1\] segmenting: 5 slices in 0m \d\ds", lines[-1])


def test_infer_reports_the_scans_done(tmp_path, ckpt_dir, capsys):
    write_phantom_series(tmp_path / "in", patients=2, slices=3, size=128, seed=4)
    arguments = ["infer", "--input", str(tmp_path / "in"), "--recursive", "--output", str(tmp_path / "out")]
    arguments += ["--ckpt-dir", str(ckpt_dir), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]
    assert main([*arguments, "--device", "cpu", "--no-overlays"]) == 0
    lines = _lines(capsys.readouterr().err, "segmenting: ")
    assert [line.split(",")[0] for line in lines[:-1]] == ["segmenting: 1/2 scans"]
    assert re.fullmatch(r"segmenting: 2 scans in 0m \d\ds", lines[-1])


def test_work_stopped_by_an_error_gets_no_closing_line(clock):
    log = io.StringIO()
    with pytest.raises(OSError), Progress(2, "slices", "segmenting", stream=log) as report:
        report.advance()
        raise OSError("no space left on the device")
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == ["segmenting: 1/2 slices"]
