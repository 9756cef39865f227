"""Which config files make up a stage of the bundle, and what they say once merged.

Every stage starts from ``configs/common.json``: the device and AMP rule, the network definition, the slice
preprocessing and the mask post-processing, written once. A stage's own config (``train.json``,
``inference.json``...) is merged onto it, then its overrides (``evaluate.json`` onto ``train.json``, a recipe,
a multi-GPU config), as ``monai.bundle run --config_file "['configs/common.json', ...]"`` merges a list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from pipeline.user_errors import UserError

COMMON_CONFIG = "common.json"


def bundle_config_files(bundle_dir: str | os.PathLike, config_names: Sequence[str]) -> list[Path]:
    """The paths of ``configs/common.json`` (where the bundle has one) and ``configs/<config_names>``.

    Raises ``UserError`` naming the configs that are missing.
    """
    configs = Path(bundle_dir).resolve() / "configs"
    common = [configs / COMMON_CONFIG] if (configs / COMMON_CONFIG).is_file() else []
    config_files = common + [configs / name for name in config_names if name != COMMON_CONFIG]
    missing = [str(path) for path in config_files if not path.is_file()]
    if missing:
        raise UserError(f"bundle config not found: {', '.join(missing)}; is --bundle a bundle folder?")
    return config_files


def merged_config(config_files: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The raw content of ``config_files`` merged in order, as ``monai.bundle run`` merges a list of configs."""
    parser = ConfigParser()
    parser.read_config([str(path) for path in config_files])
    return parser.get()


def bundle_parser(
    bundle_dir: str | os.PathLike, config_names: Sequence[str], overrides: Mapping[str, Any] | None = None
) -> ConfigParser:
    """A parser of the bundle's merged ``configs/<config_names>`` with ``bundle_root`` and ``overrides`` set."""
    parser = ConfigParser()
    parser.read_config([str(path) for path in bundle_config_files(bundle_dir, config_names)])
    parser.update({"bundle_root": str(Path(bundle_dir).resolve()), **(overrides or {})})
    return parser
