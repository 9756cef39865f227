"""Shared fixtures: the real data under ../shared/data, skipped cleanly where it is absent."""

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
