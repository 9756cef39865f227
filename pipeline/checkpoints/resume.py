"""Find the checkpoint a training resumes from."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.user_errors import UserError

LATEST_CHECKPOINT_PREFIX = "latest_checkpoint"
_LATEST_NAME = re.compile(rf"{LATEST_CHECKPOINT_PREFIX}_epoch=(\d+)\.pt")


class ResumeError(UserError, RuntimeError):
    """A training that cannot be resumed: nothing to resume from, or the run already finished."""


def latest_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Every ``latest_checkpoint_epoch=N.pt`` in ``ckpt_dir``, oldest epoch first."""
    folder = Path(ckpt_dir)
    found = [
        (int(match[1]), path)
        for path in folder.glob(f"{LATEST_CHECKPOINT_PREFIX}_*.pt")
        if (match := _LATEST_NAME.fullmatch(path.name))
    ]
    return [path for _, path in sorted(found)]


def find_latest_checkpoint(ckpt_dir: str | os.PathLike) -> str:
    """The ``latest_checkpoint_epoch=N.pt`` with the highest N in ``ckpt_dir``; ``ResumeError`` if there is none."""
    found = latest_checkpoints(ckpt_dir)
    if not found:
        raise ResumeError(
            f"{ckpt_dir}: nothing to resume: no {LATEST_CHECKPOINT_PREFIX}_epoch=N.pt here (start without --resume)"
        )
    return str(found[-1])
