"""One run per output folder: a second run into a folder another is writing is refused, naming the holder."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.user_errors import UserError

LOCK_NAME = ".pipeline-output.lock"


class OutputFolderBusyError(UserError, RuntimeError):
    """Another process holds the output folder's lock."""


@contextmanager
def output_folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) while the block runs; yield the lock file.

    The lock is the operating system's (``flock``) on ``<folder>/.pipeline-output.lock``, so a killed run
    releases it at once; the file names the holder's process id and is left in place (removing it would let a
    third run lock a file the second one no longer sees). Raises ``OutputFolderBusyError`` naming the process
    that holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputFolderBusyError(
                f"{folder}: another run (process {holder}) is writing here; wait for it to end or choose another "
                "output folder"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
