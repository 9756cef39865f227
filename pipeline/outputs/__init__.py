"""The output layer every writing command goes through: names that cannot leave the output folder, header values
that cannot forge a message line, one run per folder, and a record of what was written."""

from pipeline.outputs.lock import LOCK_NAME, OutputFolderBusyError, output_folder_lock
from pipeline.outputs.names import (
    MAX_NAME_LENGTH,
    UnsafeOutputPathError,
    output_path,
    own_subfolder,
    require_inside,
    safe_name,
)
from pipeline.outputs.text import one_line

__all__ = [
    "LOCK_NAME",
    "MAX_NAME_LENGTH",
    "OutputFolderBusyError",
    "UnsafeOutputPathError",
    "one_line",
    "output_folder_lock",
    "output_path",
    "own_subfolder",
    "require_inside",
    "safe_name",
]
