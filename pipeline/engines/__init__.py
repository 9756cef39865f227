"""MONAI engines the bundle configs use where MONAI's own need a variation."""

from pipeline.engines.tolerant_evaluator import FailureTolerantEvaluator

__all__ = ["FailureTolerantEvaluator"]
