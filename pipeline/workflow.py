"""Run the bundle's configs through MONAI's ``ConfigWorkflow``: the one path every entry point takes."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow

from pipeline import default_bundle_dir
from pipeline.checkpoints.model_config import (
    MODEL_CONFIG_FILE,
    check_overrides_agree,
    read_model_config,
    write_model_config,
)


def add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments shared by the commands that run a bundle config."""
    parser.add_argument(
        "--bundle", type=Path, default=default_bundle_dir(), help="bundle folder (default: %(default)s)"
    )
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: CUDA if available, else CPU)"
    )
    parser.epilog = (
        "Any other --KEY VALUE pair overrides the bundle config, e.g. --epochs 5 or "
        "--train#dataloader#batch_size 4 (VALUE is parsed as JSON when it can be)."
    )


def parse_overrides(extra: Sequence[str]) -> dict[str, Any]:
    """Turn ``["--epochs", "5", "--train#dataloader#batch_size", "4"]`` into bundle config overrides.

    Values are parsed as JSON where possible (numbers, booleans, lists), otherwise kept as strings.
    """
    overrides: dict[str, Any] = {}
    items = list(extra)
    while items:
        key = items.pop(0)
        if not key.startswith("--") or len(key) < 3:
            raise SystemExit(f"error: unexpected argument {key!r}: overrides are given as --KEY VALUE")
        if not items or items[0].startswith("--"):
            raise SystemExit(f"error: override {key} needs a value")
        raw = items.pop(0)
        try:
            overrides[key[2:]] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key[2:]] = raw
    return overrides


def device_override(device: str | None) -> dict[str, str]:
    """The config override that pins ``device``, or nothing to keep the config's automatic choice."""
    return {} if device is None else {"device": f"$torch.device({device!r})"}


def run_bundle(
    bundle_dir: str | os.PathLike, config_names: Sequence[str], workflow_type: str, **overrides: Any
) -> ConfigWorkflow:
    """Initialise, run and finalise ``configs/<config_names>`` of ``bundle_dir`` with ``overrides``.

    The config files are merged in order (later ones override earlier ones), as ``monai.bundle run`` does with
    a list of config files. A training run writes the trained model's definition to
    ``<ckpt_dir>/model_config.json``; every other stage merges that file last, so it rebuilds the network and
    the preprocessing the weights were trained with. Returns the finished workflow so callers can read its
    results.
    """
    bundle_dir = Path(bundle_dir).resolve()
    configs = bundle_dir / "configs"
    config_files = [configs / name for name in config_names]
    missing = [str(path) for path in config_files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"bundle config not found: {', '.join(missing)}")
    overrides = {"bundle_root": str(bundle_dir), **overrides}
    if workflow_type != "train":
        config_files += trained_model_config(config_files, overrides)
    workflow = ConfigWorkflow(
        config_file=[str(path) for path in config_files],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    if workflow_type == "train" and int(os.environ.get("RANK", "0")) == 0:
        write_model_config(workflow.parser, workflow.parser.get_parsed_content("ckpt_dir"))
    workflow.run()
    workflow.finalize()
    return workflow


def trained_model_config(config_files: Sequence[Path], overrides: dict[str, Any]) -> list[Path]:
    """``[<ckpt_dir>/model_config.json]`` where training wrote one, else ``[]``; refuses contradicting overrides."""
    parser = ConfigParser()
    parser.read_config([str(path) for path in config_files])
    parser.update(overrides)
    ckpt_dir = Path(parser.get_parsed_content("ckpt_dir"))
    model_config = read_model_config(ckpt_dir)
    if model_config is None:
        return []
    check_overrides_agree(model_config, overrides, ckpt_dir / MODEL_CONFIG_FILE)
    return [ckpt_dir / MODEL_CONFIG_FILE]
