"""Shared fixtures: the real data under ../shared/data, skipped cleanly where it is absent."""

import logging
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared_folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not (folder / "meta.csv").is_file():
        pytest.skip(f"real data not found at {folder} (only present on the project's development machines)")
    return folder


@pytest.fixture
def figshare_sample() -> Path:
    """The 116 full-resolution figshare slices (PNG conversion) with meta.csv."""
    return _shared_folder("figshare-sample")


@pytest.fixture
def figshare_dev256() -> Path:
    """Folds 1-4 of figshare resized to 256x256 (PNG conversion) with meta.csv."""
    return _shared_folder("figshare-dev256")


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    """A 1x1-conv network, saved without a model definition, that marks the bright half of a slice."""
    from tiny_bundle import save_threshold_network

    folder = tmp_path / "models"
    folder.mkdir()
    save_threshold_network(folder / "model.pt")
    return folder


@pytest.fixture(autouse=True)
def log_handlers_on_open_streams():
    """Point log handlers that an earlier test bound to its captured (now closed) stdout at the current one.

    Running a bundle applies its ``logging.conf``, whose console handler keeps the ``sys.stdout`` of that moment;
    under pytest that is a capture closed when the test ends, and a later log record would print a logging error.
    """
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values())]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
                handler.stream = sys.stdout  # setStream would flush the closed one first
    yield


def _limit_written_bytes() -> None:
    """In the child: writing more than 64 MiB into any one file ends the process."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))


@pytest.fixture
def bounded_child(tmp_path: Path) -> Callable[[Sequence[str]], subprocess.CompletedProcess]:
    """Run a command in a child with a 60 s deadline, a 64 MiB file size limit and ``tmp_path`` as its TMPDIR.

    For commands that, when broken, read a pipe for ever or copy ``/dev/zero`` without end.
    """

    def run(command: Sequence[str]) -> subprocess.CompletedProcess:
        environment = {**os.environ, "TMPDIR": str(tmp_path)}
        return subprocess.run(
            command, capture_output=True, text=True, timeout=60, env=environment, preexec_fn=_limit_written_bytes
        )

    return run
