"""Checkpoints: atomic saving, safe loading, and the state a training run resumes from."""

from pipeline.checkpoints.atomic_saver import AtomicCheckpointSaver, AtomicDiskSaver
from pipeline.checkpoints.earlier_run import EarlierRunError, guard_earlier_run
from pipeline.checkpoints.initial_weights import InitialWeightsError, initial_weights, load_initial_weights
from pipeline.checkpoints.model_config import (
    MODEL_CONFIG_FILE,
    ModelConfigMismatchError,
    read_model_config,
    with_model_config,
    write_model_config,
)
from pipeline.checkpoints.resume import (
    LATEST_CHECKPOINT_PREFIX,
    ResumeError,
    find_latest_checkpoint,
    latest_checkpoints,
)
from pipeline.checkpoints.safe_loading import (
    CheckpointMismatchError,
    DamagedCheckpointError,
    LatestCheckpointLoader,
    MissingCheckpointError,
    SafeCheckpointLoader,
    UnsafeCheckpointError,
    load_checkpoint,
    require_checkpoint,
    weights_mismatch,
)
from pipeline.checkpoints.training_state import GradScalerState, RandomStates
from pipeline.checkpoints.weights_identity import describe_weights

__all__ = [
    "LATEST_CHECKPOINT_PREFIX",
    "MODEL_CONFIG_FILE",
    "CheckpointMismatchError",
    "DamagedCheckpointError",
    "EarlierRunError",
    "InitialWeightsError",
    "LatestCheckpointLoader",
    "MissingCheckpointError",
    "ModelConfigMismatchError",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "describe_weights",
    "GradScalerState",
    "RandomStates",
    "ResumeError",
    "SafeCheckpointLoader",
    "UnsafeCheckpointError",
    "find_latest_checkpoint",
    "guard_earlier_run",
    "initial_weights",
    "latest_checkpoints",
    "load_checkpoint",
    "load_initial_weights",
    "read_model_config",
    "require_checkpoint",
    "weights_mismatch",
    "with_model_config",
    "write_model_config",
]
