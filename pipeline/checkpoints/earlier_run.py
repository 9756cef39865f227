"""Keep a new training from writing over the model or checkpoints an earlier one left in its checkpoint folder."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.atomic import remove_stale_temporaries
from pipeline.checkpoints.resume import latest_checkpoints
from pipeline.distributed import process_rank
from pipeline.user_errors import UserError

BEST_CHECKPOINT = "model.pt"


class EarlierRunError(UserError, FileExistsError):
    """A checkpoint folder that already holds a trained model or an earlier run's checkpoints."""


def guard_earlier_run(ckpt_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to start a training in ``ckpt_dir`` over an earlier run's ``model.pt`` or latest checkpoints.

    ``train.json`` calls this first in ``initialize`` (and ``python -m pipeline train`` before it builds the
    workflow), so neither CLI replaces the shipped weights by default. Resuming (``resume``) continues the
    earlier run and needs its checkpoints. With ``overwrite`` the earlier run's latest checkpoints are removed,
    so a later resume can only pick the new run's, and its ``model.pt`` stays until the first validation replaces
    it. Temporary checkpoint files a killed run left half-written are removed. Raises ``EarlierRunError`` naming
    the folder and the ways out, or when a flag is no bool or both are set.
    """
    ckpt_dir = Path(ckpt_dir).absolute()  # named in full: the bundle's own configs make it `./models`
    for name, value in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(value, bool):  # MONAI's CLI passes `--overwrite false` on as the (true) string "false"
            raise EarlierRunError(
                f"{name} must be True or False, not {value!r} (with `monai.bundle run`: --{name} True)"
            )
    if resume and overwrite:
        raise EarlierRunError(f"{ckpt_dir}: resume and overwrite exclude each other; set one of them")
    earlier = latest_checkpoints(ckpt_dir)
    if overwrite:
        for stale in earlier:
            stale.unlink(missing_ok=True)  # every rank of a multi-GPU run clears the same folder
    if overwrite or resume:
        remove_stale_temporaries_of_rank_zero(ckpt_dir)
        return
    if earlier:
        raise EarlierRunError(
            f"{ckpt_dir}: holds checkpoints of an earlier run ({earlier[-1].name}); pass --resume to continue it "
            "or --overwrite to start a new run over it, or --ckpt-dir to train into another folder "
            "(with `monai.bundle run`: --resume True or --overwrite True)"
        )
    if (ckpt_dir / BEST_CHECKPOINT).is_file():
        raise EarlierRunError(
            f"{ckpt_dir}: holds a trained {BEST_CHECKPOINT} (in a fresh clone, the released model); pass --ckpt-dir "
            "to train into another folder, or --overwrite to replace it (with `monai.bundle run`: --overwrite True)"
        )
    remove_stale_temporaries_of_rank_zero(ckpt_dir)


def remove_stale_temporaries_of_rank_zero(ckpt_dir: Path) -> None:
    """Remove what a killed run left half-written in ``ckpt_dir``, in rank 0 only: rank 0 writes every file there,
    and another rank starting later would remove a temporary rank 0 is still writing."""
    if process_rank() == 0:
        remove_stale_temporaries(ckpt_dir)
