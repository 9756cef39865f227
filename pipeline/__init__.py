"""2D brain-tumour MRI segmentation: data readers, the custom U-Net and helpers the MONAI bundle points at."""

import sys
import warnings
from pathlib import Path

from pipeline.user_errors import report_user_errors_briefly

__version__ = "0.5.0"
BUNDLE_NAME = "brain_tumor_mri_2d_segmentation"
# MONAI's bundle metadata schema (Apache-2.0, from Project-MONAI/MONAI-extra-test-data), shipped as package data
# so that `check` and `export` validate offline.
DEFAULT_SCHEMA = Path(__file__).resolve().parent / "schemas" / "meta_schema_20240725.json"

# Warnings MONAI raises about its own internals, which no user of this package can act on, or about facts the package
# reports itself. They are silenced here, on import, by exact message: the bundle's configs import the package, so
# `python -m monai.bundle run` is as quiet as `python -m pipeline`.
HARMLESS_WARNINGS = (
    # LoadImage builds every reader it knows; with pydicom installed, one warns in every process that NVIDIA's
    # optional GPU decoder is absent. pydicom's own decoders are the ones used here.
    (UserWarning, "NvImgCodecPydicomReader: nvImageCodec decoder plugin"),
    # MONAI's HausdorffDistanceMetric passes an argument that MONAI itself deprecated.
    (FutureWarning, r"monai\.metrics\.utils get_mask_edges:always_return_as_numpy"),
    # verify_metadata checks a schema's hash only when given one; the schema ships with this package.
    (UserWarning, r"No hash value provided for .*meta_schema_\d+\.json"),
    # ScaleIntensityRangePercentiles on a constant image (a blank slice): the image becomes all zeros, as it should.
    (Warning, r"Divide by zero \(a_min == a_max\)"),
    # HausdorffDistanceMetric on a slice where the model predicts no tumour: the HD95 is then not a number, and the
    # training's epoch line and the evaluation report count such slices themselves.
    (UserWarning, r"the prediction of class \d+ is all 0"),
)
for _category, _message in HARMLESS_WARNINGS:
    warnings.filterwarnings("ignore", message=_message, category=_category)

# MONAI's bundle CLI (`python -m monai.bundle run ...`) imports this package as it reads the configs.
if sys.argv and Path(sys.argv[0]).parts[-3:] == ("monai", "bundle", "__main__.py"):
    report_user_errors_briefly()


def default_bundle_dir() -> Path:
    """The bundle the commands use unless given ``--bundle``.

    In a clone of the repository (installed editable, or run from it): ``bundles/brain_tumor_mri_2d_segmentation``
    beside the package. Installed from a wheel (``pip install .``, or the wheel an exported bundle carries), the
    package has no bundle beside it; then it is the current folder, as for ``python -m monai.bundle run``, so the
    commands work from inside an unzipped bundle.
    """
    in_repository = Path(__file__).resolve().parents[1] / "bundles" / BUNDLE_NAME
    return in_repository if in_repository.is_dir() else Path.cwd()
