"""The output layer every writing command goes through: names that cannot leave the output folder, one run per
folder, and a record of what was written."""

from pipeline.outputs.lock import LOCK_NAME, OutputFolderBusyError, output_folder_lock
from pipeline.outputs.names import MAX_NAME_LENGTH, UnsafeOutputPathError, output_path, require_inside, safe_name

__all__ = [
    "LOCK_NAME",
    "MAX_NAME_LENGTH",
    "OutputFolderBusyError",
    "UnsafeOutputPathError",
    "output_folder_lock",
    "output_path",
    "require_inside",
    "safe_name",
]
