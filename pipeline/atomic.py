"""Atomic file output: a reader never sees a half-written file, a crash never leaves one behind."""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.user_errors import UserError

# mkstemp's random part is 8 characters of [a-z0-9_]; the final name follows the "~".
TEMPORARY_PREFIX = "."
TEMPORARY_NAME = re.compile(r"\.[a-z0-9_]{8}~.+")
# Write faults of the whole folder, not of one file: every later output would fail alike.
FOLDER_FAULTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
}
_last_folder_fault = threading.local()


class OutputFolderFaultError(UserError, OSError):
    """An output that cannot be written because its folder is full or read-only: a run stops on it."""


def take_folder_fault() -> OutputFolderFaultError | None:
    """The folder fault :func:`atomic_path` last raised in this thread, once (then None).

    MONAI's ``SaveImage`` turns its writer's error into a ``RuntimeError`` holding only the error's text; a run
    asks here whether the error behind it was a full or read-only output folder.
    """
    fault = getattr(_last_folder_fault, "error", None)
    _last_folder_fault.error = None
    return fault


def current_umask() -> int:
    """The process's umask: from ``/proc/self/status`` where Linux gives it, else by setting it and putting it
    back (the only way POSIX offers, briefly racy in a threaded process)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`atomic_path` left in ``folder`` (not below it) when a run was
    killed mid-write; return them. Call it only where no other run writes (a locked output folder, a training's
    checkpoint folder at its start)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    # A link is never one of ours, and never followed: what it leads to may lie outside the folder.
    stale = [
        path
        for path in folder.iterdir()
        if TEMPORARY_NAME.fullmatch(path.name) and not path.is_symlink() and path.is_file()
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def remove_stale_temporaries_below(folder: str | os.PathLike) -> list[Path]:
    """:func:`remove_stale_temporaries` in ``folder`` and every folder below it, links to folders not followed;
    return what was removed."""
    return [path for each, _, _ in os.walk(folder) for path in remove_stale_temporaries(each)]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    The temporary file lives in the destination folder so the final ``os.replace`` is atomic on
    POSIX and Windows, and its name ends with ``path``'s name (``.<random>~1_seg.nii.gz``) so that
    writers choosing the format from the file name (nibabel, Pillow) still see the right one.
    The file gets the mode a plain ``open`` would give it under the process's umask (``mkstemp`` alone
    makes it private), so outputs in a shared folder stay readable by the group that shares it.
    On error the temporary file is removed and ``path`` is left untouched; what a killed process
    leaves behind, :func:`remove_stale_temporaries` removes at the next start. A full or read-only folder raises
    ``OutputFolderFaultError``, one line naming ``path`` (see :func:`take_folder_fault`).
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=f"~{path.name}", dir=path.parent)
        tmp = Path(tmp_name)
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if isinstance(error, OutputFolderFaultError) or error.errno not in FOLDER_FAULTS:
            raise
        _last_folder_fault.error = OutputFolderFaultError(f"{path}: cannot write: {FOLDER_FAULTS[error.errno]}")
        raise _last_folder_fault.error from error
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
