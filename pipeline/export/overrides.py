"""Write command-line overrides into a bundle's config files, so the shared bundle runs as it was exported."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from pipeline.atomic import write_text_atomic
from pipeline.bundle_configs import bundle_parser
from pipeline.export.errors import BundleExportError


def record_overrides(configs_dir: Path, overrides: Mapping[str, Any]) -> None:
    """Set every ``id -> value`` of ``overrides`` in each JSON config of ``configs_dir`` that defines ``id``.

    ``metadata.json`` is left alone (:func:`sync_metadata_shapes` derives it). An override that no config
    defines is a typing mistake that would otherwise export a network other than the checkpoint's. A config
    whose ``network_def`` is an expression (the TorchScript config loads ``model.ts``) keeps it: the network
    definition describes the Python network that was scripted, not how the script is loaded.
    """
    config_files = sorted(path for path in configs_dir.glob("*.json") if path.name != "metadata.json")
    parsers = {path: ConfigParser(ConfigParser.load_config_file(path)) for path in config_files}
    for key, value in overrides.items():
        holders = [parser for parser in parsers.values() if key in parser and not _loads_a_script(parser, key)]
        if not holders:
            raise BundleExportError(f"{configs_dir}: no config defines {key!r}; check the spelling of --{key}")
        for parser in holders:
            parser[key] = value
    for path, parser in parsers.items():
        write_text_atomic(path, json.dumps(parser.get(), indent=4) + "\n")


def _loads_a_script(parser: ConfigParser, key: str) -> bool:
    """Whether ``key`` is a ``network_def`` the config builds with an expression, such as ``torch.jit.load``."""
    return key == "network_def" and isinstance(parser[key], str) and parser[key].startswith("$")


def sync_metadata_shapes(configs_dir: Path, config_name: str = "inference.json") -> dict:
    """Set the metadata's input and output ``spatial_shape`` to the config's ``image_size`` and return it.

    The network sees every slice at ``image_size`` x ``image_size``; MONAI's export and verification tools
    read that shape from the metadata, so the two must agree after ``image_size`` was overridden.
    """
    size = int(bundle_parser(configs_dir.parent, [config_name]).get_parsed_content("image_size"))
    meta_file = configs_dir / "metadata.json"
    metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    for section in ("inputs", "outputs"):
        for tensor in metadata["network_data_format"][section].values():
            tensor["spatial_shape"] = [size, size]
    write_text_atomic(meta_file, json.dumps(metadata, indent=4) + "\n")
    return metadata
