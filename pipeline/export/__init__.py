"""Share a trained bundle: TorchScript/ONNX export, the bundle zip, hosted weights and the pre-release checks."""

from pipeline.export.bundle_export import ExportedBundle, export_bundle
from pipeline.export.checks import CheckReport, check_bundle
from pipeline.export.errors import BundleExportError
from pipeline.export.large_files import fetch_large_files, read_large_files

__all__ = [
    "BundleExportError",
    "CheckReport",
    "ExportedBundle",
    "check_bundle",
    "export_bundle",
    "fetch_large_files",
    "read_large_files",
]
