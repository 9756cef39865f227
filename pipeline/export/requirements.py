"""The shared bundle's ``requirements.txt``: what its ``metadata.json`` names, pinned as MONAI's model zoo pins it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text_atomic

REQUIREMENTS = "requirements.txt"


def pinned_requirements(metadata: Mapping[str, Any]) -> list[str]:
    """``monai``, ``torch``, ``numpy`` at the metadata's versions, then each ``required_packages_version``, pinned."""
    versions = {
        "monai": metadata["monai_version"],
        "torch": metadata["pytorch_version"],
        "numpy": metadata["numpy_version"],
        **metadata.get("required_packages_version", {}),
    }
    return [f"{name}=={version}" for name, version in versions.items()]


def write_requirements(bundle_dir: Path, metadata: Mapping[str, Any]) -> None:
    """Write ``bundle_dir/requirements.txt`` from ``metadata``, so the list is derived, never kept by hand."""
    header = "# Derived from configs/metadata.json at export. Install these, then the package: see docs/README.md.\n"
    lines = "".join(f"{requirement}\n" for requirement in pinned_requirements(metadata))
    write_text_atomic(bundle_dir / REQUIREMENTS, header + lines)
