"""Shared fixtures: the real data under ../shared/data, skipped cleanly where it is absent."""

import logging
import sys
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
