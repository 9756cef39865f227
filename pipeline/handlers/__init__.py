"""Ignite handlers the bundle configs attach to MONAI's trainers and evaluators."""

from pipeline.handlers.learning_curve import LearningCurveHandler
from pipeline.handlers.segmentation_report import SegmentationReportHandler

__all__ = ["LearningCurveHandler", "SegmentationReportHandler"]
