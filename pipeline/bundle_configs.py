"""Which config files make up a stage of the bundle, and what they say once merged.

Every stage starts from ``configs/common.json``: the device and AMP rule, the network definition, the slice
preprocessing and the mask post-processing, written once. A stage's own config (``train.json``...) is merged
onto it, then its overrides (``evaluate.json`` onto ``train.json``, a recipe, a multi-GPU config), as
``monai.bundle run --config_file "['configs/common.json', ...]"`` merges a list.

``configs/inference.json`` is the exception tools demand: model-zoo's checks, MONAI Label and every zoo user run
it alone. It is therefore written out whole by :func:`write_standalone_inference`: ``common.json``'s keys, the
shipped model's definition (``models/model_config.json``), then the keys of its own. Its own keys are edited
there; the shared ones only in ``common.json`` (a test fails until the file is written again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from pipeline.atomic import write_text_atomic
from pipeline.user_errors import UserError

COMMON_CONFIG = "common.json"
STANDALONE_INFERENCE = "inference.json"
SHIPPED_MODEL_CONFIG = Path("models") / "model_config.json"


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


def standalone_inference(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """``configs/inference.json`` of ``bundle_dir`` as it must read to stand alone: the imports of
    ``common.json`` and its own, ``common.json``'s keys with the shipped model's definition in place, then the
    keys that only ``inference.json`` has."""
    bundle_dir = Path(bundle_dir)
    common = _read_json(bundle_dir / "configs" / COMMON_CONFIG)
    stage = _read_json(bundle_dir / "configs" / STANDALONE_INFERENCE)
    model_file = bundle_dir / SHIPPED_MODEL_CONFIG
    model = _read_json(model_file) if model_file.is_file() else {}
    imports = [*common.get("imports", [])]
    imports += [line for line in [*stage.get("imports", []), *stage.get("+imports", [])] if line not in imports]
    own = {key: value for key, value in stage.items() if key not in {*common, *model, "imports", "+imports"}}
    shared = {key: model.get(key, value) for key, value in common.items() if key != "imports"}
    return {"imports": imports, **shared, **own}


def write_standalone_inference(bundle_dir: str | os.PathLike) -> Path:
    """Write :func:`standalone_inference` over ``configs/inference.json`` (atomically) and return its path."""
    path = Path(bundle_dir) / "configs" / STANDALONE_INFERENCE
    write_text_atomic(path, config_json(standalone_inference(bundle_dir)) + "\n")
    return path


def config_json(value: Any, indent: int = 0) -> str:
    """``value`` as JSON in the bundle configs' layout: four-space indents, lists of plain values on one line."""
    pad = " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(key)}: {config_json(item, indent + 4)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if (
        isinstance(value, list)
        and any(isinstance(item, (dict, list)) for item in value)
        or (isinstance(value, list) and all(isinstance(item, str) and item.startswith("$") for item in value) and value)
    ):
        items = [f"{pad}{config_json(item, indent + 4)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot be read as a JSON config ({error})") from error
