"""The checks a bundle must pass before it is shared, each returning one line per problem found."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.apps.utils import check_hash
from monai.bundle import verify_metadata, verify_net_in_out

from pipeline import DEFAULT_SCHEMA
from pipeline.bundle_configs import bundle_config_files, bundle_parser
from pipeline.export.checkpoint import check_fits, load_state_dict
from pipeline.export.contents import REQUIRED_FILES
from pipeline.export.errors import BundleExportError
from pipeline.export.large_files import LARGE_FILES, read_large_files
from pipeline.export.package import archive_name, checksum_problem, unsafe_entries
from pipeline.export.torchscript import TOLERANCE
from pipeline.user_errors import UserError


@dataclass
class CheckReport:
    """What :func:`check_bundle` found: each line of ``problems`` fails the bundle."""

    problems: list[str] = field(default_factory=list)


def missing_files(bundle_dir: Path) -> list[str]:
    """One line per file of the model-zoo layout that ``bundle_dir`` lacks."""
    return [
        f"{bundle_dir / name}: required bundle file is missing"
        for name in REQUIRED_FILES
        if not (bundle_dir / name).is_file()
    ]


def read_metadata(meta_file: Path) -> dict:
    """The parsed ``metadata.json``; :class:`BundleExportError` when it is not a JSON object."""
    try:
        metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleExportError(f"{meta_file}: cannot be read as JSON ({error})") from error
    if not isinstance(metadata, dict):
        raise BundleExportError(f"{meta_file}: must hold a JSON object")
    return metadata


def schema_problems(meta_file: Path, schema: Path) -> list[str]:
    """Validate ``meta_file`` against MONAI's metadata schema at ``schema``, offline (nothing is downloaded).

    A missing ``schema`` is a problem too: a check that cannot run must not pass.
    """
    if not schema.is_file():
        return [f"{schema}: MONAI's metadata schema not found; {meta_file} cannot be validated"]
    try:
        verify_metadata(meta_file=str(meta_file), filepath=str(schema))
    except ValueError as error:
        # MONAI keeps jsonschema's error as the cause: it knows which field failed, MONAI's message does not.
        cause = error.__cause__
        if hasattr(cause, "json_path") and hasattr(cause, "message"):
            return [f"{meta_file}: does not match MONAI's metadata schema at {cause.json_path}: {cause.message}"]
        return [f"{meta_file}: does not match MONAI's metadata schema: {' '.join(str(error).split())}"]
    return []


def version_problems(meta_file: Path, metadata: Mapping[str, Any]) -> list[str]:
    """The bundle's ``version`` must have its own ``changelog`` entry: every released change is described."""
    version, changelog = metadata.get("version"), metadata.get("changelog")
    if not isinstance(changelog, dict) or version not in changelog:
        return [f"{meta_file}: version {version!r} has no changelog entry; describe what changed in it"]
    return []


def network_problems(bundle_dir: Path, overrides: Mapping[str, Any]) -> list[str]:
    """Run MONAI's ``verify_net_in_out`` on ``network_def`` of ``configs/inference.json`` (with ``overrides``)."""
    configs = bundle_dir / "configs"
    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(configs / "metadata.json"),
            config_file=[str(path) for path in bundle_config_files(bundle_dir, ["inference.json"])],
            device="cpu",
            **overrides,
        )
    except Exception as error:  # any failure to build or run the network is a finding to report, not a crash
        return [f"{configs / 'inference.json'}: network_def fails MONAI's input/output check: {error}"]
    return []


def loaded_network(bundle_dir: Path, overrides: Mapping[str, Any], ckpt_file: Path) -> torch.nn.Module:
    """``network_def`` of ``configs/inference.json`` (with ``overrides``) holding the weights of ``ckpt_file``, in
    eval mode; ``UserError`` when they cannot be read or do not fit."""
    network = bundle_parser(bundle_dir, ["inference.json"], overrides).get_parsed_content("network_def")
    state = load_state_dict(ckpt_file)
    check_fits(network, state, ckpt_file)
    network.load_state_dict(state)
    return network.eval()


def torchscript_problems(
    model_file: Path, metadata: Mapping[str, Any], network: torch.nn.Module | None, ckpt_file: Path
) -> list[str]:
    """``model_file`` must load, come from this metadata version, map the declared input to the declared output
    and, where ``network`` holds the weights of ``ckpt_file``, give its outputs on a probe input."""
    extra_files = {"metadata.json": ""}
    try:
        model = torch.jit.load(str(model_file), map_location="cpu", _extra_files=extra_files)
    except RuntimeError as error:
        return [f"{model_file}: does not load as TorchScript ({str(error).strip().splitlines()[0]})"]
    embedded = json.loads(extra_files["metadata.json"] or "{}").get("version")
    if embedded != metadata.get("version"):
        return [
            f"{model_file}: exported from version {embedded!r}, bundle is {metadata.get('version')!r}; export again"
        ]
    expected_channels = metadata["network_data_format"]["outputs"]["pred"]["num_channels"]
    probe = torch.rand(input_shape(metadata), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = model.eval()(probe)
        expected = network(probe) if network is not None else output
    if output.shape[1] != expected_channels:
        return [f"{model_file}: returns {output.shape[1]} channels, metadata declares {expected_channels}"]
    if output.shape != expected.shape or not torch.allclose(output, expected, rtol=TOLERANCE, atol=TOLERANCE):
        difference = (output - expected).abs().max().item() if output.shape == expected.shape else float("inf")
        return [
            f"{model_file}: is not {ckpt_file} (outputs on a probe input differ by up to {difference:.3g}); "
            "export the weights again"
        ]
    return []


def input_shape(metadata: Mapping[str, Any]) -> list[int]:
    """A one-slice batch shape ``[1, C, H, W]`` of the network input the metadata declares."""
    image = metadata["network_data_format"]["inputs"]["image"]
    return [1, int(image["num_channels"]), *(int(side) for side in image["spatial_shape"])]


def archive_problems(archive: Path) -> list[str]:
    """The zip ``archive`` must be one, and every entry must unpack inside the folder it is unpacked in."""
    try:
        unsafe = unsafe_entries(archive)
    except (zipfile.BadZipFile, OSError) as error:
        return [f"{archive}: not a readable zip archive ({error})"]
    if unsafe:
        return [
            f"{archive}: refused: {len(unsafe)} entries would unpack outside its folder (absolute or with '..'), "
            f"first {unsafe[0]!r}; whatever its checksum says, do not unpack it"
        ]
    return []


def large_files_problems(bundle_dir: Path) -> list[str]:
    """``large_files.yml`` must be well formed, and a listed file that is present must match its hash."""
    try:
        entries = read_large_files(bundle_dir)
    except (BundleExportError, ValueError) as error:
        return [str(error)]
    return [
        f"{bundle_dir / entry['path']}: {entry['hash_type']} differs from {LARGE_FILES}"
        for entry in entries
        if (bundle_dir / entry["path"]).is_file()
        and not check_hash(bundle_dir / entry["path"], entry["hash_val"], entry["hash_type"])
    ]


def check_bundle(
    bundle_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    schema: Path = DEFAULT_SCHEMA,
    ckpt_file: Path | None = None,
) -> CheckReport:
    """Every check model-zoo's CI runs, and the ones a shared bundle adds, on ``bundle_dir``.

    Required files, metadata against the schema (a problem when ``schema`` is absent), a changelog
    entry for the version, the network's input/output against the metadata (``overrides`` as for the other
    commands), and where present: the weights ``ckpt_file`` (default ``models/model.pt``) fitting the network,
    the ``model.ts`` beside them loading and giving their outputs, the archive of this version holding only
    entries that unpack inside its folder and matching its checksum, ``large_files.yml`` entries matching the
    files beside them.
    """
    report = CheckReport(problems=missing_files(bundle_dir))
    meta_file = bundle_dir / "configs" / "metadata.json"
    if not meta_file.is_file():
        return report
    try:
        metadata = read_metadata(meta_file)
    except BundleExportError as error:
        report.problems.append(str(error))
        return report
    report.problems += schema_problems(meta_file, schema)
    report.problems += version_problems(meta_file, metadata)
    ckpt_file = ckpt_file if ckpt_file is not None else bundle_dir / "models" / "model.pt"
    network = None
    if (bundle_dir / "configs" / "inference.json").is_file():
        report.problems += network_problems(bundle_dir, overrides or {})
        if ckpt_file.is_file():
            try:
                network = loaded_network(bundle_dir, overrides or {}, ckpt_file)
            except UserError as error:
                report.problems.append(str(error))
    torchscript = ckpt_file.parent / "model.ts"
    if torchscript.is_file():
        report.problems += torchscript_problems(torchscript, metadata, network, ckpt_file)
    archive = bundle_dir / "dist" / archive_name(bundle_dir.name, str(metadata.get("version")))
    if archive.is_file():
        report.problems += archive_problems(archive)
        report.problems += [problem for problem in [checksum_problem(archive)] if problem]
    if (bundle_dir / LARGE_FILES).is_file():
        report.problems += large_files_problems(bundle_dir)
    return report
