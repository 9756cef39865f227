"""3D volumes (DICOM series, NIfTI) segmented slice by slice with the bundle's 2D model."""

from pipeline.volumes.segmenter import SliceSegmenter

__all__ = ["SliceSegmenter"]
