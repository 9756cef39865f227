"""Pack a staged bundle folder into one reproducible zip with a ``sha256sum``-style checksum beside it."""

from __future__ import annotations

import functools
import hashlib
import re
import zipfile
from pathlib import Path, PureWindowsPath

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.outputs import safe_name

# A fixed timestamp makes the archive depend on the files' content only, so its checksum is reproducible.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
CHUNK = 1 << 20


def archive_name(bundle_name: str, version: str) -> str:
    """``<bundle>_v<version>.zip``, the name a shared bundle travels under; both parts are made safe names, since
    the version comes from the bundle's ``metadata.json``."""
    return f"{safe_name(bundle_name)}_v{safe_name(version)}.zip"


def digest_of(path: Path, hash_type: str) -> str:
    """The hexadecimal ``hash_type`` digest (``md5``, ``sha256``...) of the file at ``path``."""
    digest = hashlib.new(hash_type)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """The hexadecimal SHA-256 of the file at ``path``; a file unchanged since an earlier call (same size, same
    modification time in nanoseconds) is not read again."""
    status = Path(path).stat()
    return _sha256_of(str(Path(path).resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return digest_of(Path(path), "sha256")


def write_zip(source_dir: Path, zip_path: Path, root_name: str) -> None:
    """Write every file of ``source_dir`` into ``zip_path`` (atomically) under the top folder ``root_name``."""
    files = sorted(path for path in source_dir.rglob("*") if path.is_file())
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(f"{root_name}/{path.relative_to(source_dir).as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, "rb") as src, archive.open(info, "w") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)


def unsafe_entries(archive: Path) -> list[str]:
    """The entries of the zip ``archive`` that would unpack outside the folder it is unpacked in: absolute names
    (``/x``, ``C:x``, ``\\x``) and names with a ``..`` part, ``/`` or ``\\`` separated."""
    with zipfile.ZipFile(archive) as packed:
        names = packed.namelist()
    return [
        name
        for name in names
        if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in re.split(r"[/\\]", name)
    ]


def write_checksum(path: Path) -> Path:
    """Write ``<path>.sha256`` in ``sha256sum`` format (``<hex>  <name>``) and return its path."""
    checksum = path.with_name(path.name + ".sha256")
    write_text_atomic(checksum, f"{sha256_of(path)}  {path.name}\n")
    return checksum


def checksum_problem(path: Path) -> str | None:
    """Why ``path`` does not match its ``.sha256`` file, or ``None`` when it does."""
    checksum = path.with_name(path.name + ".sha256")
    if not checksum.is_file():
        return f"{checksum}: missing checksum file for {path.name}"
    recorded = checksum.read_text(encoding="utf-8").split()
    if len(recorded) != 2 or recorded[1].lstrip("*") != path.name:
        return f"{checksum}: not in sha256sum format ('<hex>  {path.name}')"
    if recorded[0] != sha256_of(path):
        return f"{path}: SHA-256 differs from {checksum.name}; the archive changed after export"
    return None
