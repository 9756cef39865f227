"""Stage configs that stand alone in the shared bundle, for tools that read one config file.

MONAI Label's ``monaibundle`` app reads ``configs/inference.json`` (and ``train.json``) alone, and MONAI Deploy
reads the one config embedded in ``model.ts``. In the repository every stage config is merged onto
``configs/common.json``; the exported zip therefore carries each stage config merged with it (``common.json``
stays too, so the repository's multi-file commands still run: merging it again changes nothing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monai.bundle.reference_resolver import ReferenceResolver
from monai.bundle.utils import ID_SEP_KEY

from pipeline.atomic import write_text_atomic
from pipeline.bundle_configs import bundle_config_files, merged_config
from pipeline.export.torchscript import TORCHSCRIPT_CONFIG
from pipeline.networks.ensemble import ENSEMBLE_TARGET

# The configs a single-file tool runs; the rest (evaluate.json, recipes, multi-GPU) are overrides of train.json.
STANDALONE_CONFIGS = ("train.json", "inference.json", TORCHSCRIPT_CONFIG)
# What ``monai.bundle run`` executes; every other key matters only when one of these reaches it.
WORKFLOW_ROOTS = ("imports", "initialize", "run", "finalize")


def write_standalone_configs(bundle_dir: Path) -> None:
    """Replace each of ``STANDALONE_CONFIGS`` in ``bundle_dir/configs`` by its merge with ``common.json``.

    The TorchScript config keeps only what its workflow reaches (:func:`reachable_config`), so it names no
    ``pipeline.*`` component and runs with MONAI alone.
    """
    for name in STANDALONE_CONFIGS:
        path = bundle_dir / "configs" / name
        if path.is_file():
            content = merged_config(bundle_config_files(bundle_dir, [name]))
            if name == TORCHSCRIPT_CONFIG:
                content = reachable_config(content)
            if name == "train.json":
                content["network_def"] = trained_network(content["network_def"])
            write_text_atomic(path, json.dumps(content, indent=4) + "\n")


def trained_network(network_def: Any) -> Any:
    """The network one training run trains: a fold ensemble's member (``crossval`` trains one per fold and joins
    them), any other definition as it is."""
    if isinstance(network_def, dict) and network_def.get("_target_") == ENSEMBLE_TARGET:
        return network_def["member"]
    return network_def


def reachable_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the top-level keys that nothing run by the workflow refers to.

    Keeps the keys of ``WORKFLOW_ROOTS`` and, transitively, every key an ``@reference`` in a kept key names:
    the MONAI-only TorchScript config drops the ``pipeline.*`` components that ``common.json`` declares for the
    other stages.
    """
    kept: set[str] = set()
    pending = [key for key in WORKFLOW_ROOTS if key in config]
    while pending:
        key = pending.pop()
        if key in kept or key not in config:
            continue
        kept.add(key)
        references = ReferenceResolver.find_refs_in_config(config[key], id=key)
        pending += [reference.split(ID_SEP_KEY)[0] for reference in references]
    return {key: value for key, value in config.items() if key in kept}
