"""Inferers the bundle configs declare as ``inferer``, for what MONAI's own inferers do not cover."""

from pipeline.inferers.flip_tta import FlipTTAInferer
from pipeline.inferers.overlap_tile import OverlapTileInferer

__all__ = ["FlipTTAInferer", "OverlapTileInferer"]
