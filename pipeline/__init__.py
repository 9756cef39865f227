"""2D brain-tumour MRI segmentation: data readers, the custom U-Net and helpers the MONAI bundle points at."""

from pathlib import Path

__version__ = "0.2.0"
BUNDLE_NAME = "brain_tumor_mri_2d_segmentation"
# MONAI's metadata schema as the project keeps it offline, in shared/monai beside the repository checkout.
DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "monai" / "meta_schema_20240725.json"


def default_bundle_dir() -> Path:
    """The bundle shipped beside the package (``bundles/brain_tumor_mri_2d_segmentation``)."""
    return Path(__file__).resolve().parents[1] / "bundles" / BUNDLE_NAME
