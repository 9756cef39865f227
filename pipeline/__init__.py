"""2D brain-tumour MRI segmentation: data readers, the custom U-Net and helpers the MONAI bundle points at."""

from pathlib import Path

__version__ = "0.4.0"
BUNDLE_NAME = "brain_tumor_mri_2d_segmentation"
# MONAI's bundle metadata schema (Apache-2.0, from Project-MONAI/MONAI-extra-test-data), shipped as package data
# so that `check` and `export` validate offline.
DEFAULT_SCHEMA = Path(__file__).resolve().parent / "schemas" / "meta_schema_20240725.json"


def default_bundle_dir() -> Path:
    """The bundle the commands use unless given ``--bundle``.

    In a clone of the repository (installed editable, or run from it): ``bundles/brain_tumor_mri_2d_segmentation``
    beside the package. Installed from a wheel (``pip install .``, or the wheel an exported bundle carries), the
    package has no bundle beside it; then it is the current folder, as for ``python -m monai.bundle run``, so the
    commands work from inside an unzipped bundle.
    """
    in_repository = Path(__file__).resolve().parents[1] / "bundles" / BUNDLE_NAME
    return in_repository if in_repository.is_dir() else Path.cwd()
