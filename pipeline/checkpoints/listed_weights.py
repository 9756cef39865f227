"""Weights checked at run time against the hash the bundle's ``large_files.yml`` lists for them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.export.errors import BundleExportError
from pipeline.export.large_files import LARGE_FILES, read_large_files
from pipeline.export.package import digest_of
from pipeline.user_errors import UserError

logger = logging.getLogger(__name__)


class ListedWeightsError(UserError, ValueError):
    """Weights that differ from the hash the bundle lists for them, refused under ``strict_weights``."""


def listed_weights_problem(bundle_dir: str | os.PathLike, weights: str | os.PathLike, sha256: str) -> str | None:
    """How the weights file ``weights`` (whose SHA-256 is ``sha256``) differs from the hash that
    ``bundle_dir/large_files.yml`` lists for it; ``None`` where it matches, or the list does not name the file."""
    bundle_dir, weights = Path(bundle_dir), Path(weights)
    if not (bundle_dir / LARGE_FILES).is_file():
        return None
    try:
        entries = read_large_files(bundle_dir)
    except (BundleExportError, ValueError) as error:
        return f"{weights}: cannot be checked against {bundle_dir / LARGE_FILES} ({error})"
    for entry in entries:
        if (bundle_dir / entry["path"]).resolve() != weights.resolve():
            continue
        kind = entry["hash_type"]
        actual = sha256 if kind == "sha256" else digest_of(weights, kind)
        if actual != entry["hash_val"]:
            return (
                f"{weights}: {kind} {actual} differs from {entry['hash_val']}, which {bundle_dir / LARGE_FILES} "
                "lists for it: not the weights the bundle was released with"
            )
    return None


def check_listed_weights(
    bundle_dir: str | os.PathLike, weights: str | os.PathLike, sha256: str, strict: bool = False
) -> None:
    """Warn in one line where ``weights`` differs from the hash the bundle lists for it; with ``strict`` (the
    ``strict_weights`` config key, ``--strict-weights``) refuse them with ``ListedWeightsError`` instead."""
    problem = listed_weights_problem(bundle_dir, weights, sha256)
    if problem is None:
        return
    if strict:
        raise ListedWeightsError(
            f"{problem}; refused (strict_weights): move the file away and run python -m pipeline fetch-weights"
        )
    logger.warning("%s; --strict-weights refuses such weights", problem)
