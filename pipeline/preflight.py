"""Checks an entry point makes before hours of work: is its dataset there, can it write its outputs, is there room."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.bundle_configs import bundle_parser
from pipeline.data.datalist import DATALIST_NAME, read_datalist
from pipeline.user_errors import UserError

MIB = 2**20
# A latest checkpoint of the full-size U-Net (weights and AdamW moments, ~375 MB), its temporary twin while it is
# written atomically, and the best model: about 1 GiB.
TRAIN_MIN_FREE_BYTES = 1024 * MIB
# Masks and overlays of a folder of slices are small; this leaves room for a few thousand of them.
INFER_MIN_FREE_BYTES = 256 * MIB


class PreflightError(UserError, RuntimeError):
    """An output folder or a dataset that cannot be used; the message names it and says what to do."""


def check_output_folder(folder: str | os.PathLike, min_free_bytes: int, create: bool = True) -> None:
    """Create ``folder`` if needed, prove it writable with a probe file, and require ``min_free_bytes`` free.

    With ``create=False`` nothing is left behind: the probe goes to ``folder`` or, while it does not exist yet, to
    the nearest folder above it, for a command that may still refuse its inputs before it writes. Raises
    ``PreflightError`` naming the folder when it cannot be created or written (a file in its place or above it
    included), or has too little room.
    """
    folder = Path(folder)
    probed = folder if create else _nearest_existing(folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=probed)
        try:
            os.write(handle, b"probe")
            os.fsync(handle)
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as error:
        raise PreflightError(f"{folder}: cannot write here ({error.strerror or error})") from None
    free = shutil.disk_usage(probed).free
    if free < min_free_bytes:
        raise PreflightError(
            f"{folder}: only {free / MIB:.0f} MiB free, at least {min_free_bytes / MIB:.0f} MiB needed"
        )


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or the nearest path above it that exists (a file, if one stands in the way)."""
    while not os.path.lexists(folder) and folder.parent != folder:
        folder = folder.parent
    return folder


def require_datalist(dataset_dir: str | os.PathLike, lists: Sequence[str] = ()) -> tuple[Path, dict[str, Any]]:
    """``<dataset_dir>/datalist.json`` and its content, read once; ``PreflightError`` saying how to write it when it
    is not there, and ``DatasetError`` when it cannot be read or one of ``lists`` is missing or malformed
    (``read_datalist``)."""
    path = Path(dataset_dir) / DATALIST_NAME
    if not path.is_file():
        raise PreflightError(
            f"{path}: not found; write it with `python -m pipeline prepare --src SLICES --out {dataset_dir}`"
        )
    return path, read_datalist(path, lists)


def refuse_output_among_inputs(
    folders: Sequence[str | os.PathLike],
    datalist_path: str | os.PathLike,
    datalist: Mapping[str, Any],
    lists: Sequence[str],
) -> None:
    """Raise ``PreflightError`` when one of the output ``folders`` is a folder holding images or labels that the
    ``lists`` of ``datalist`` (read from ``datalist_path``) name: what a run writes there would mix with the slices
    (a user file of the same name replaced), and a later ``prepare`` or ``infer`` would take it for a slice."""
    datalist_path = Path(datalist_path)
    input_folders = {
        (datalist_path.parent / entry[key]).resolve().parent
        for name in lists
        for entry in datalist[name]
        for key in ("image", "label")
    }
    for folder in folders:
        if Path(folder).resolve() in input_folders:
            raise PreflightError(
                f"{folder}: holds the dataset's slices ({datalist_path}); choose a folder outside them for the outputs"
            )


def refuse_non_empty_folder(folder: str | os.PathLike, what: str) -> None:
    """Raise ``PreflightError`` when ``folder`` holds anything; ``what`` names the outputs it would receive."""
    from pipeline.outputs.lock import LOCK_NAME

    folder = Path(folder)
    if folder.is_dir() and any(entry.name != LOCK_NAME for entry in folder.iterdir()):
        raise PreflightError(
            f"{folder}: already holds files; pass --overwrite to write {what} into it "
            "(files of the same names are replaced) or choose another folder"
        )


def bundle_config_values(
    bundle_dir: str | os.PathLike, config_names: Sequence[str], keys: Sequence[str], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The values of ``keys`` in the bundle's merged ``configs/<config_names>`` with ``overrides`` applied.

    Lets an entry point check the folders a workflow will write before it builds the workflow.
    """
    parser = bundle_parser(bundle_dir, config_names, overrides)
    return {key: parser.get_parsed_content(key) for key in keys}
