"""Checkpoints written atomically: a crash or a kill at any moment leaves the previous checkpoint intact."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler

from pipeline.atomic import atomic_path


class AtomicDiskSaver(BaseSaveHandler):
    """An ignite save handler that writes each checkpoint atomically and deletes replaced ones only afterwards.

    Each file is written to a temporary file in ``dirname``, fsynced and renamed over its final name, and the
    folder is fsynced so the rename survives a power cut. ignite's ``Checkpoint`` asks for an old file to be
    removed *before* it saves the new one; this handler postpones those removals until the new file is in
    place, so a kill between the two never leaves the folder without a checkpoint. Only rank 0 writes.

    Args:
        dirname: the folder for the checkpoints, created when missing.
    """

    def __init__(self, dirname: str | os.PathLike) -> None:
        self.dirname = Path(dirname)
        self._replaced: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != 0:
            return
        self.dirname.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dirname / filename) as tmp:
            torch.save(checkpoint, tmp)
        _fsync_folder(self.dirname)
        for name in self._replaced:
            if name != filename:
                (self.dirname / name).unlink(missing_ok=True)
        self._replaced = []

    def remove(self, filename: str) -> None:
        """Mark ``filename`` for deletion once the checkpoint that replaces it has been written."""
        self._replaced.append(filename)


class AtomicCheckpointSaver(Checkpoint):
    """ignite's ``Checkpoint`` writing through ``AtomicDiskSaver``, attachable like a MONAI handler.

    ``Checkpoint`` has ``state_dict``/``load_state_dict`` (the scores of the files it keeps), so a saver can
    itself be part of a resumable checkpoint: after a resume the best-model saver still knows the best score
    and never replaces the best model by a worse one.

    Args:
        save_dir: the folder for the checkpoints.
        to_save: the objects to save, each with ``state_dict()``.
        event: when to save (default: every completed epoch of the engine it is attached to).
        kwargs: passed to ``ignite.handlers.Checkpoint`` (``filename_prefix``, ``score_function``,
            ``score_name``, ``n_saved``, ``filename_pattern``, ...).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        to_save: Mapping,
        event: Events = Events.EPOCH_COMPLETED,
        **kwargs: Any,
    ) -> None:
        super().__init__(to_save, AtomicDiskSaver(save_dir), **kwargs)
        self.event = event

    def attach(self, engine: Engine) -> None:
        """Save on ``event`` of ``engine``."""
        engine.add_event_handler(self.event, self)


def _fsync_folder(folder: Path) -> None:
    if os.name == "nt":  # Windows cannot open a folder for fsync; its renames are journalled by NTFS.
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
