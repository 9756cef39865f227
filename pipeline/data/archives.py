"""Extract the figshare archives (``brainTumorDataPublic_*.zip``) safely into a dataset folder."""

import shutil
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from monai.apps.utils import safe_extract_member

from pipeline.atomic import atomic_path
from pipeline.data.sources import MAT_SUFFIXES, file_suffix


def extract_slice_archives(archives: Sequence[Path], dest: Path) -> tuple[list[Path], list[str]]:
    """Extract every ``.mat`` member of ``archives`` into the flat folder ``dest``; return the files and problems.

    A member with an absolute path or ``..`` is refused, never written; a member that is not a ``.mat`` file or
    whose name another archive already gave is reported. A file already in ``dest`` with the member's size and
    CRC-32 is kept, so a second run only extracts what is missing. Each file appears under its final name only
    once it is complete.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    origin: dict[str, str] = {}
    for archive in archives:
        try:
            with zipfile.ZipFile(archive) as bundle:
                for info in bundle.infolist():
                    name = PurePosixPath(info.filename).name
                    # Directory entries and macOS resource forks ("._1.mat") hold no slices.
                    if info.is_dir() or name.startswith("."):
                        continue
                    where = f"{archive}:{info.filename}"
                    try:
                        safe_extract_member(info, str(dest))
                    except ValueError as error:
                        problems.append(f"{where}: refused, {error}")
                        continue
                    if file_suffix(Path(name)) not in MAT_SUFFIXES:
                        problems.append(f"{where}: unknown extension {file_suffix(Path(name)) or '(none)'!r}")
                    elif name in origin:
                        problems.append(f"{where}: duplicate slice file {name!r} (also {origin[name]})")
                    else:
                        origin[name] = where
                        problems += _extract_member(bundle, info, dest / name, where)
        except (zipfile.BadZipFile, OSError) as error:
            problems.append(f"{archive}: not a readable zip archive ({error})")
    return [dest / name for name in origin], problems


def _extract_member(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, where: str) -> list[str]:
    if _is_current(target, info):
        return []
    try:
        with atomic_path(target) as temporary, open(temporary, "wb") as out, bundle.open(info) as member:
            shutil.copyfileobj(member, out, length=1 << 20)
    except zipfile.BadZipFile as error:
        return [f"{where}: corrupt archive member ({error})"]
    return []


def _is_current(target: Path, info: zipfile.ZipInfo) -> bool:
    if not target.is_file() or target.stat().st_size != info.file_size:
        return False
    crc = 0
    with open(target, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc == info.CRC
