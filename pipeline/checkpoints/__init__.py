"""Checkpoints: atomic saving, safe loading, and the state a training run resumes from."""

from pipeline.checkpoints.atomic_saver import AtomicCheckpointSaver, AtomicDiskSaver
from pipeline.checkpoints.resume import (
    LATEST_CHECKPOINT_PREFIX,
    ResumeError,
    find_latest_checkpoint,
    latest_checkpoints,
)
from pipeline.checkpoints.safe_loading import SafeCheckpointLoader, UnsafeCheckpointError, load_checkpoint
from pipeline.checkpoints.training_state import GradScalerState, RandomStates

__all__ = [
    "LATEST_CHECKPOINT_PREFIX",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "GradScalerState",
    "RandomStates",
    "ResumeError",
    "SafeCheckpointLoader",
    "UnsafeCheckpointError",
    "find_latest_checkpoint",
    "latest_checkpoints",
    "load_checkpoint",
]
