"""Export a trained bundle: TorchScript and ONNX weights in ``models/``, one shareable zip in ``dist/``."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_path
from pipeline.bundle_configs import bundle_parser
from pipeline.checkpoints import MODEL_CONFIG_FILE
from pipeline.export.checkpoint import check_fits, is_state_dict_file, load_state_dict
from pipeline.export.checks import DEFAULT_SCHEMA, input_shape, read_metadata, schema_problems, version_problems
from pipeline.export.contents import WEIGHT_FILES, shipped_sources
from pipeline.export.errors import BundleExportError
from pipeline.export.large_files import LARGE_FILES, read_large_files, write_large_files
from pipeline.export.onnx_graph import export_onnx, missing_onnx_packages
from pipeline.export.overrides import record_overrides, sync_metadata_shapes
from pipeline.export.package import archive_name, write_checksum, write_zip
from pipeline.export.requirements import write_requirements
from pipeline.export.standalone import write_standalone_configs
from pipeline.export.torchscript import TORCHSCRIPT_CONFIG, export_torchscript
from pipeline.export.wheel import WHEEL_DIR, build_wheel
from pipeline.outputs import output_path

# What identifies a release: a changed config or checkpoint under an already released version is refused.
RELEASE_IDENTITY = ("configs/", "models/model.pt")


@dataclass(frozen=True)
class ExportedBundle:
    """The files :func:`export_bundle` wrote; ``onnx`` is ``None`` when ONNX packages missed, with their names."""

    torchscript: Path
    onnx: Path | None
    archive: Path
    checksum: Path
    missing_onnx_packages: tuple[str, ...] = ()


def _stage(bundle_dir: Path, staged: Path, overrides: Mapping[str, Any]) -> dict:
    """Copy the shipped files into ``staged``, record ``overrides`` in its configs, make its stage configs stand
    alone, and return its metadata."""
    for relative in shipped_sources(bundle_dir):
        (staged / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle_dir / relative, staged / relative)
    record_overrides(staged / "configs", overrides)
    write_standalone_configs(staged)
    return sync_metadata_shapes(staged / "configs")


def _configured_network(staged: Path) -> torch.nn.Module:
    return bundle_parser(staged, ["inference.json"]).get_parsed_content("network_def")


def _release_identity(read: Mapping[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in read.items() if name.startswith(RELEASE_IDENTITY)}


def _check_release_is_new_or_same(archive: Path, staged: Path, root_name: str, version: str) -> None:
    """Refuse to replace a released archive of ``version`` by one whose configs or weights differ."""
    if not archive.is_file():
        return
    with zipfile.ZipFile(archive) as released:
        prefix = f"{root_name}/"
        before = _release_identity({name[len(prefix) :]: released.read(name) for name in released.namelist()})
    now = _release_identity(
        {path.relative_to(staged).as_posix(): path.read_bytes() for path in staged.rglob("*") if path.is_file()}
    )
    if before != now:
        raise BundleExportError(
            f"{archive}: version {version} was already exported with other configs or weights; "
            "bump 'version' in configs/metadata.json and add a 'changelog' entry for it"
        )


def export_bundle(
    bundle_dir: str | Path,
    ckpt_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    dist_dir: str | Path | None = None,
    weights_url: str | None = None,
    schema: Path = DEFAULT_SCHEMA,
) -> ExportedBundle:
    """Export ``ckpt_file`` (default ``<bundle>/models/model.pt``) of ``bundle_dir`` and package the bundle.

    Writes, beside ``ckpt_file``, ``model.ts`` (TorchScript with the metadata and the MONAI-only
    ``inference_torchscript.json`` embedded as ``inference.json``) and ``model.onnx`` (dynamic batch, height and
    width), and ``<dist_dir>/<bundle>_v<version>.zip`` (default ``dist_dir``: ``<bundle>/dist``) with a
    ``.sha256`` beside it. The zip also carries ``wheels/``, the wheel of this package built from the source tree
    (the configs' ``pipeline.*`` targets), and ``requirements.txt``, the packages the metadata names: with both
    installed, the unzipped bundle runs wherever MONAI runs. ``overrides`` are the config overrides the checkpoint
    was trained with (``network_def#features``, ``image_size``...): they build the exported network and are written
    into the zipped configs, so the unzipped bundle runs with the same shapes. Every file of the zip that describes
    the weights comes from ``ckpt_file``: ``models/``, and ``large_files.yml``, which lists the zipped files with
    their SHA-256 (with ``weights_url``, each at ``<weights_url>/<file name>``, for hosting them apart from the
    zip).

    Everything is built in a temporary folder and checked first (checkpoint present and fitting the network,
    metadata valid against ``schema``, a changelog entry for the version, a released
    version never replaced by other configs or weights); only then are the outputs moved in, each atomically.
    Without the ONNX packages (the ``export`` extra) everything but ``model.onnx`` is written, and the result
    names the missing packages.
    """
    bundle_dir = Path(bundle_dir).resolve()
    ckpt_file = Path(ckpt_file) if ckpt_file is not None else bundle_dir / "models" / "model.pt"
    dist_dir = Path(dist_dir) if dist_dir is not None else bundle_dir / "dist"
    state = load_state_dict(ckpt_file)
    meta_file = bundle_dir / "configs" / "metadata.json"
    metadata = read_metadata(meta_file)
    problems = schema_problems(meta_file, schema) + version_problems(meta_file, metadata)
    if problems:
        raise BundleExportError(problems[0])
    if not (bundle_dir / "configs" / TORCHSCRIPT_CONFIG).is_file():
        raise BundleExportError(
            f"{bundle_dir / 'configs' / TORCHSCRIPT_CONFIG}: not found; the TorchScript model carries it, so that "
            "MONAI alone runs the exported model"
        )
    version = str(metadata["version"])
    with tempfile.TemporaryDirectory(prefix="bundle-export-") as tmp:
        staged = Path(tmp) / bundle_dir.name
        staged_metadata = _stage(bundle_dir, staged, overrides or {})
        build_wheel(staged / WHEEL_DIR)
        write_requirements(staged, staged_metadata)
        network = _configured_network(staged)
        check_fits(network, state, ckpt_file)
        network.load_state_dict(state)
        models = staged / "models"
        models.mkdir()
        if is_state_dict_file(ckpt_file):
            shutil.copyfile(ckpt_file, models / "model.pt")  # the same bytes, so large_files.yml's hash still holds
        else:
            torch.save(state, models / "model.pt")
        if (ckpt_file.parent / MODEL_CONFIG_FILE).is_file():
            shutil.copyfile(ckpt_file.parent / MODEL_CONFIG_FILE, models / MODEL_CONFIG_FILE)
        archive = output_path(dist_dir, archive_name(bundle_dir.name, version))
        _check_release_is_new_or_same(archive, staged, bundle_dir.name, version)
        shape = input_shape(staged_metadata)
        torchscript_config = staged / "configs" / TORCHSCRIPT_CONFIG
        export_torchscript(network, models / "model.ts", shape, staged_metadata, torchscript_config)
        missing = missing_onnx_packages()
        if not missing:
            export_onnx(staged, models / "model.pt", models / "model.onnx", shape)
        if weights_url:
            write_large_files(staged, [name for name in WEIGHT_FILES if (staged / name).is_file()], weights_url)
        elif (staged / LARGE_FILES).is_file():
            listed = [entry["path"] for entry in read_large_files(staged)]
            write_large_files(staged, [name for name in listed if (staged / name).is_file()])
        outputs = {}
        for name in ("model.ts", "model.onnx"):
            if (models / name).is_file():
                outputs[name] = ckpt_file.parent / name
                with atomic_path(outputs[name]) as tmp_output:
                    shutil.copyfile(models / name, tmp_output)
        write_zip(staged, archive, root_name=bundle_dir.name)
    return ExportedBundle(
        outputs["model.ts"], outputs.get("model.onnx"), archive, write_checksum(archive), tuple(missing)
    )
