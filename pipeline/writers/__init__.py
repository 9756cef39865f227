"""Writers for MONAI's ``SaveImage``/``SaveImaged`` that write each file atomically."""

from pipeline.writers.atomic_image_writers import AtomicNibabelWriter, AtomicPILWriter, atomic_writer

__all__ = ["AtomicNibabelWriter", "AtomicPILWriter", "atomic_writer"]
