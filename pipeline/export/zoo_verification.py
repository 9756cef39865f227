"""The checks of Project-MONAI/model-zoo's ``ci/verify_bundle.py`` in full mode, run offline on one bundle folder.

The same MONAI calls in the same order, on ``configs/inference.json`` alone as the zoo runs it: the bundle
folder and its large files, version and changelog, the metadata against MONAI's schema (``verify_metadata``,
from a local copy), the network's input and output shapes (``verify_net_in_out``), the weights exported to
TorchScript (``ckpt_export``, into a temporary folder so the bundle is left as it was), a shipped ``model.ts``
loading, and the inference workflow's required properties (``ConfigWorkflow.check_properties``). Nothing is
downloaded: large files must already be in place and match their hashes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from monai.apps.utils import check_hash
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from pipeline.export.large_files import LARGE_FILES, read_large_files

NET_ID, CONFIG_FILE = "network_def", "configs/inference.json"


class ZooCheckError(RuntimeError):
    """A model-zoo check that failed, with the step named."""


def verify_directory(bundle_dir: Path) -> str:
    """``configs/metadata.json`` exists, and every file of ``large_files.yml`` is present with its hash."""
    if not (bundle_dir / "configs" / "metadata.json").is_file():
        raise ZooCheckError(f"metadata path: {bundle_dir / 'configs/metadata.json'} is not existing.")
    if (bundle_dir / LARGE_FILES).is_file():
        for entry in read_large_files(bundle_dir):
            path = bundle_dir / entry["path"]
            if not path.is_file() or not check_hash(path, entry["hash_val"], entry["hash_type"]):
                raise ZooCheckError(f"{path}: missing or not matching its {entry['hash_type']} in {LARGE_FILES}")
    return "directory is verified correctly."


def verify_version(bundle_dir: Path) -> str:
    """``version`` and ``changelog`` are in the metadata and the version has its changelog entry."""
    metadata = json.loads((bundle_dir / "configs" / "metadata.json").read_text(encoding="utf-8"))
    for key in ("version", "changelog"):
        if key not in metadata:
            raise ZooCheckError(f"'{key}' is missing in configs/metadata.json of bundle: {bundle_dir.name}.")
    if metadata["version"] not in metadata["changelog"]:
        raise ZooCheckError(f"version number: {metadata['version']} is missing in 'changelog'.")
    return "version and changelog are verified correctly."


def verify_metadata_format(bundle_dir: Path, schema: Path) -> str:
    """MONAI's ``verify_metadata`` against the schema file ``schema`` (present, so nothing is downloaded)."""
    if not schema.is_file():
        raise ZooCheckError(f"{schema}: MONAI's metadata schema not found")
    verify_metadata(meta_file=str(bundle_dir / "configs" / "metadata.json"), filepath=str(schema))
    return "metadata format is verified correctly."


def verify_data_shape(bundle_dir: Path) -> str:
    """MONAI's ``verify_net_in_out`` on ``network_def`` of ``configs/inference.json`` alone."""
    verify_net_in_out(
        net_id=NET_ID,
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        config_file=str(bundle_dir / CONFIG_FILE),
        bundle_root=str(bundle_dir),
        device="cpu",
    )
    return "data shape is verified correctly."


def verify_torchscript(bundle_dir: Path) -> str:
    """MONAI's ``ckpt_export`` of ``models/model.pt`` into ``network_def``, then ``models/model.ts`` if shipped."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_export(
            net_id=NET_ID,
            filepath=str(Path(tmp) / "verify_model.ts"),
            ckpt_file=str(bundle_dir / "models" / "model.pt"),
            meta_file=str(bundle_dir / "configs" / "metadata.json"),
            config_file=str(bundle_dir / CONFIG_FILE),
            bundle_root=str(bundle_dir),
        )
    lines = ["export weights into TorchScript module successfully."]
    if (bundle_dir / "models" / "model.ts").is_file():
        torch.jit.load(str(bundle_dir / "models" / "model.ts"), map_location="cpu")
        lines.append("Provided TorchScript module is verified correctly.")
    return "\n".join(lines)


def verify_inference_properties(bundle_dir: Path) -> str:
    """The properties MONAI requires of an inference workflow are all in ``configs/inference.json`` alone."""
    workflow = ConfigWorkflow(
        config_file=str(bundle_dir / CONFIG_FILE),
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        logging_file=str(bundle_dir / "configs" / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(bundle_dir),
    )
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise ZooCheckError(f"{bundle_dir / CONFIG_FILE}: lacks the inference properties {missing}")
    return "inference properties are verified correctly."


def verify_like_model_zoo(bundle_dir: Path, schema: Path) -> list[str]:
    """Run every check on ``bundle_dir`` in the zoo's order; return the lines each printed.

    Raises ``ZooCheckError`` naming the step that failed (MONAI's own error as its cause).
    """
    steps: list[tuple[str, Callable[[], str]]] = [
        ("directory", lambda: verify_directory(bundle_dir)),
        ("version", lambda: verify_version(bundle_dir)),
        ("metadata", lambda: verify_metadata_format(bundle_dir, schema)),
        ("data shape", lambda: verify_data_shape(bundle_dir)),
        ("torchscript", lambda: verify_torchscript(bundle_dir)),
        ("inference properties", lambda: verify_inference_properties(bundle_dir)),
    ]
    lines = [f"start verifying {bundle_dir.name}:"]
    for name, step in steps:
        try:
            lines.append(step())
        except ZooCheckError:
            raise
        except Exception as error:  # whatever MONAI raised is the finding; the step says where
            raise ZooCheckError(f"{bundle_dir}: the model-zoo {name} check failed: {error}") from error
    return lines
