"""Run the bundle's configs through MONAI's ``ConfigWorkflow``: the one path every entry point takes."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow

from pipeline.bundle_configs import bundle_config_files, merged_config
from pipeline.checkpoints.listed_weights import check_listed_weights
from pipeline.checkpoints.model_config import MODEL_CONFIG_FILE, check_overrides_agree, read_model_config
from pipeline.checkpoints.safe_loading import verify_checkpoint
from pipeline.export.package import sha256_of
from pipeline.overrides import check_overrides

# MONAI warns when the config files are not all in one folder, as a stage's are with the trained model's
# model_config.json merged in from the checkpoint folder; meta_file and logging_file are always given here, so the
# folder it would fall back to is never used.
logging.getLogger("monai.bundle.workflows").addFilter(
    lambda record: not record.getMessage().startswith("Not all config files are in")
)


def check_bundle_overrides(
    bundle_dir: str | os.PathLike, config_names: Sequence[str], overrides: Mapping[str, Any]
) -> None:
    """Refuse overrides that name no key of the bundle's merged ``configs/<config_names>``, or have another type.

    Raises ``UserError`` with the nearest existing key or the expected type, before anything is written.
    """
    check_overrides(merged_config(bundle_config_files(bundle_dir, config_names)), overrides)


def run_bundle(
    bundle_dir: str | os.PathLike, config_names: Sequence[str], workflow_type: str, **overrides: Any
) -> ConfigWorkflow:
    """Initialise, run and finalise ``configs/<config_names>`` of ``bundle_dir`` with ``overrides``.

    The config files are merged in order (later ones override earlier ones), as ``monai.bundle run`` does with
    a list of config files. A training run writes the trained model's definition to
    ``<ckpt_dir>/model_config.json`` (``train.json``'s ``initialize``); every other stage merges that file last, so
    it rebuilds the network and the preprocessing the weights were trained with. Returns the finished workflow so
    callers can read its results. Raises ``UserError`` for an override that fits no key of the configs, and for a
    stage other than training whose weights (``checkpoint_loader``'s file) are missing, unreadable, not fitting the
    network, or (under ``strict_weights``) other than the ones the bundle's ``large_files.yml`` lists, before any
    of its work.
    """
    bundle_dir = Path(bundle_dir).resolve()
    configs = bundle_dir / "configs"
    config_files = bundle_config_files(bundle_dir, config_names)
    overrides = {"bundle_root": str(bundle_dir), **overrides}
    check_overrides(merged_config(config_files), overrides)
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
    if workflow_type != "train" and "checkpoint_loader" in workflow.parser:
        # Before the engine runs: refused inside it, ignite and MONAI's StatsHandler would each log it once more.
        loader = workflow.parser.get_parsed_content("checkpoint_loader")
        verify_checkpoint(loader.load_path, loader.load_dict["model"])
        strict = workflow.parser.get_parsed_content("strict_weights")
        check_listed_weights(bundle_dir, loader.load_path, sha256_of(Path(loader.load_path)), strict)
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
