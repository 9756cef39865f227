"""Ignite handlers the bundle configs attach to MONAI's trainers and evaluators."""

from pipeline.handlers.atomic_metrics_saver import AtomicMetricsSaver
from pipeline.handlers.epoch_summary import EpochSummary
from pipeline.handlers.learning_curve import LearningCurveHandler
from pipeline.handlers.load_failure_report import InputFailuresError, LoadFailureReport
from pipeline.handlers.nan_guard import NonFiniteLossError, NonFiniteLossGuard
from pipeline.handlers.progress_report import ProgressReport
from pipeline.handlers.segmentation_report import SegmentationReportHandler

__all__ = [
    "AtomicMetricsSaver",
    "EpochSummary",
    "InputFailuresError",
    "LearningCurveHandler",
    "LoadFailureReport",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "ProgressReport",
    "SegmentationReportHandler",
]
