"""Output names from untrusted values. A DICOM UID, a series description, a patient field, a name inside an
archive or a datalist is data, never a path: :func:`safe_name` turns it into one harmless file-name component and
:func:`output_path` proves that what it builds lies inside the output folder."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from pipeline.user_errors import UserError

# A DICOM UID has at most 64 characters, so every valid UID is kept whole.
MAX_NAME_LENGTH = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_DIGEST_LENGTH = 8


class UnsafeOutputPathError(UserError, ValueError):
    """An output path that would lie outside its output folder."""


def safe_name(value: object, max_length: int = MAX_NAME_LENGTH) -> str:
    """``value`` as one file-name component of letters, digits, ``.``, ``_`` and ``-``, at most ``max_length`` long.

    A value that is already such a name (a valid DICOM UID, ``T1_axial``) is returned unchanged. Any other
    character becomes ``_``, a leading ``.`` (a hidden name, ``.`` or ``..``) gets a ``_`` before it, and a
    changed or shortened value ends with ``-`` and 8 hexadecimal digits of its SHA-256, so two different
    values never share a name: ``../../x`` gives ``_.._.._x-<digest>``. An empty value gives ``_-<digest>``.
    """
    text = str(value)
    name = _UNSAFE.sub("_", text)
    if name.startswith(".") or not name:
        name = "_" + name
    if name == text and len(name) <= max_length:
        return name
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_LENGTH]
    return f"{name[: max_length - _DIGEST_LENGTH - 1]}-{digest}"


def output_path(folder: str | os.PathLike, *parts: str | os.PathLike) -> Path:
    """``folder`` joined with ``parts``, refused unless it resolves (links followed) to a path inside ``folder``.

    ``parts`` are trusted relative paths (a subfolder mirrored from the input tree) or names made by
    :func:`safe_name`; an absolute part, a ``..`` or a link that leads out raises ``UnsafeOutputPathError`` in
    one line naming the path and the folder. Returns the joined, unresolved path.
    """
    return require_inside(folder, Path(folder).joinpath(*parts))


def require_inside(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` itself when it resolves (links followed) to a path inside ``folder``; else
    ``UnsafeOutputPathError`` in one line naming both."""
    path, root = Path(path), Path(folder).resolve()
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise UnsafeOutputPathError(
            f"{path}: refused: this output would be written outside the output folder {folder} "
            f"(it resolves to {resolved})"
        )
    return path


def own_subfolder(folder: str | os.PathLike, *parts: str) -> Path:
    """``folder`` joined with ``parts``: a folder a command fills with its own files, never a link.

    A folder that is a link, or that lies below one inside ``folder``, is refused with ``UnsafeOutputPathError``
    in one line: a link planted there (by a hostile dataset, say) would lead the command's files onto other
    files, the user's source data included, even when it points inside ``folder``. Returns the joined path,
    which need not exist yet; a path that exists as a file is refused as well.
    """
    path = Path(folder)
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise UnsafeOutputPathError(
                f"{path}: refused: this output folder is a link (to {os.readlink(path)}); the command writes its own "
                "files there and does not follow links: remove it, or choose another output folder"
            )
        if path.exists() and not path.is_dir():
            raise UnsafeOutputPathError(
                f"{path}: refused: the command writes its files in this folder, but it is a file"
            )
    return require_inside(folder, path)
