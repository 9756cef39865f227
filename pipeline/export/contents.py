"""Which files a shared bundle holds: configs, docs, licence, the large-files list and the exported weights."""

from __future__ import annotations

from pathlib import Path

# Folders copied whole (hidden files aside); everything else a bundle folder collects while it is used
# (datasets, caches, tensorboard logs, evaluation outputs, resumable checkpoints, dist/) stays behind.
SHIPPED_FOLDERS = ("configs", "docs")
SHIPPED_FILES = ("LICENSE", "large_files.yml")
WEIGHT_FILES = ("models/model.pt", "models/model.ts", "models/model.onnx")
REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/inference.json",
    "LICENSE",
    "docs/README.md",
    "docs/data_license.txt",
)


def shipped_sources(bundle_dir: Path) -> list[Path]:
    """The configs, docs, licence and large-files list of ``bundle_dir``, relative to it, sorted.

    Weights are not listed: export writes them itself from the checkpoint it is given.
    """
    found = [Path(name) for name in SHIPPED_FILES if (bundle_dir / name).is_file()]
    for folder in SHIPPED_FOLDERS:
        for path in (bundle_dir / folder).rglob("*"):
            relative = path.relative_to(bundle_dir)
            if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
                found.append(relative)
    return sorted(found)
