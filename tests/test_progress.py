"""Progress of long work: plain lines in a log (each tenth, at least every 30 s), a live bar on a terminal, nothing
with --quiet; training's bars only on a terminal."""

from __future__ import annotations

import io
import re

import pytest
from ignite.engine import Engine

from pipeline import default_bundle_dir, progress
from pipeline.bundle_configs import bundle_parser
from pipeline.handlers import ProgressReport
from pipeline.overrides import quiet_override
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
