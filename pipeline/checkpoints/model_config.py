"""The trained model's definition, written beside its weights so that every later stage rebuilds it unchanged.

Training (``train.json``'s ``initialize``, through either CLI) writes ``<ckpt_dir>/model_config.json``: the config
keys that define what the weights mean (the network definition, the input size and the intensity scaling). It is
a bundle config override like any other: the entry points merge it after the stage's configs, and
``python -m monai.bundle run`` takes it as one more ``--config_file``. This is nnU-Net's plans file in bundle form.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from torch import nn

from pipeline.atomic import write_text_atomic
from pipeline.distributed import process_rank
from pipeline.user_errors import UserError

logger = logging.getLogger(__name__)

MODEL_CONFIG_FILE = "model_config.json"
# The config keys that define the trained model; each of train.json and inference.json defines all of them.
DEFINING_KEYS = ("network_def", "image_size", "intensity_percentiles")


class ModelConfigMismatchError(UserError, ValueError):
    """An override that contradicts the definition the trained model was saved with."""


def write_model_config(
    ckpt_dir: str | os.PathLike,
    network_target: str,
    network: nn.Module,
    image_size: int,
    intensity_percentiles: Sequence[float],
) -> Path | None:
    """Write the definition of the network a training run trains to ``<ckpt_dir>/model_config.json`` (atomically)
    and return its path.

    ``train.json``'s ``initialize`` calls it, so both ``python -m pipeline train`` and ``python -m monai.bundle run``
    write it: ``network_target`` is ``network_def``'s ``_target_`` as the config spells it (``%network_def#_target_``),
    ``network`` the network built from ``network_def``, whose ``arguments`` are the values it was built with (a
    config cannot hand its raw ``network_def`` to a function: MONAI builds every block holding a ``_target_``).
    A network that does not record its arguments gets no definition, and a warning says so. In a multi-process
    run every rank builds the same network and only rank 0 writes the file.
    """
    arguments = getattr(network, "arguments", None)
    if not isinstance(arguments, Mapping):
        logger.warning(
            "%s: not written: %s does not record its arguments; give every later stage the network overrides this "
            "training used",
            Path(ckpt_dir) / MODEL_CONFIG_FILE,
            network_target,
        )
        return None
    definition = ({"_target_": network_target, **arguments}, image_size, list(intensity_percentiles))
    path = Path(ckpt_dir) / MODEL_CONFIG_FILE
    if process_rank() != 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(dict(zip(DEFINING_KEYS, definition, strict=True)), indent=4) + "\n")
    return path


def read_model_config(ckpt_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The definition saved in ``<ckpt_dir>/model_config.json``, or ``None`` where training wrote none."""
    path = Path(ckpt_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelConfigMismatchError(f"{path}: not a JSON model definition ({error})") from error
    unknown = sorted(set(content) - set(DEFINING_KEYS))
    if not isinstance(content, dict) or unknown:
        raise ModelConfigMismatchError(f"{path}: unexpected keys {unknown}; expected only {list(DEFINING_KEYS)}")
    return content


def check_overrides_agree(model_config: Mapping[str, Any], overrides: Mapping[str, Any], source: Path) -> None:
    """Refuse an override of a defining key (``image_size``, ``network_def#features``...) that differs from
    what the model in ``source`` was trained with: the weights would not mean what the config says."""
    saved = ConfigParser(dict(model_config))
    folds = overrides.get("folds")
    if folds is not None and "folds" not in model_config.get("network_def", {}):
        raise ModelConfigMismatchError(
            f"--folds {' '.join(map(str, folds))}: the model in {source} is a single network, not a fold ensemble"
        )
    for key, value in overrides.items():
        if key.split("#")[0] not in DEFINING_KEYS or key not in saved:
            continue
        if saved.get(key) != value:
            raise ModelConfigMismatchError(
                f"--{key} {json.dumps(value)} contradicts the trained model, which has {key} = "
                f"{json.dumps(saved.get(key))} ({source}); drop the override, or train a model with it"
            )


def with_model_config(ckpt_dir: str | os.PathLike, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of the definition saved in ``ckpt_dir`` (if any), after checking they agree.

    The network definition is given whole (``network_def``), so that it replaces a definition of another
    kind (a fold ensemble by a single network, or the other way round) rather than mixing their arguments.
    """
    model_config = read_model_config(ckpt_dir)
    if model_config is None:
        return dict(overrides)
    check_overrides_agree(model_config, overrides, Path(ckpt_dir) / MODEL_CONFIG_FILE)
    return {**model_config, **overrides}
