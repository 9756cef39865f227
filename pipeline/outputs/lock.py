"""One run per output folder: a second run into a folder another is writing is refused, naming the holder."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.user_errors import UserError

LOCK_NAME = ".pipeline-output.lock"


class OutputFolderBusyError(UserError, RuntimeError):
    """Another process holds the output folder's lock, or the lock cannot be taken."""


@contextmanager
def output_folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) while the block runs; yield the lock file.

    The lock is the operating system's (``flock``) on ``<folder>/.pipeline-output.lock``, so a killed run
    releases it at once. The file names the holder's process id while the run lasts and is removed as the run
    ends. A run that locked a file another run has just removed sees that the name no longer leads to its file
    and locks the new one instead, so two runs never both hold the folder. Raises ``OutputFolderBusyError``
    naming the process that holds it, or saying why the lock file cannot be used.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFolderBusyError(f"{folder}: cannot create the output folder ({error.strerror or error})") from None
    while True:
        handle = _open_lock_file(path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise OutputFolderBusyError(
                f"{folder}: another run (process {holder}) is writing here; wait for it to end or choose another "
                "output folder"
            ) from None
        if _still_named(path, handle):
            break
        handle.close()  # the run before removed the file between our open and our lock: lock the new one
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path
    finally:
        # Removed while still locked: a run waiting on this file then finds it unnamed and starts over.
        path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _open_lock_file(path: Path):
    """Open the lock file itself: never a file a link (symbolic or hard) leads to, which the lock would empty."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as error:
        what = {errno.ELOOP: "a link", errno.EISDIR: "not a regular file"}.get(error.errno)  # ELOOP: O_NOFOLLOW
        if what:
            raise OutputFolderBusyError(
                f"{path}: the output folder's lock file is {what}; remove it, or choose another output folder"
            ) from None
        raise OutputFolderBusyError(
            f"{path}: cannot open the output folder's lock ({error.strerror or error})"
        ) from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink > 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(status.st_mode) else "a file with other names (a hard link)"
        raise OutputFolderBusyError(
            f"{path}: the output folder's lock file is {what}; remove it, or choose another output folder"
        )
    return os.fdopen(fd, "r+", encoding="utf-8")


def _still_named(path: Path, handle) -> bool:
    """Whether ``path`` still names the open file ``handle``."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def lock_holder(folder: str | os.PathLike) -> int | None:
    """The process id of the run that holds ``folder``'s lock, or None when no run holds it (a killed run's
    lock file left behind is not held)."""
    path = Path(folder) / LOCK_NAME
    try:
        # Not a link, and never blocking on a named pipe planted in its place.
        handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), encoding="utf-8")
    except OSError:
        return None
    with handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
