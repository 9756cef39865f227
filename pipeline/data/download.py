"""Fetch the figshare brain tumour dataset (four archives and ``cvind.mat``), checked and resumable.

Files come from figshare (doi:10.6084/m9.figshare.1512427) or from a mirror: a local folder or a base URL
(``https://``, ``file://``) holding the files under their figshare names. Each file is streamed into
``<name>.part`` in the download folder (``pipeline.data.fetch``), at most ``MAX_FILE_BYTES``, and renamed to
``<name>`` only once complete and checked, so a file under its final name is always whole and nothing is written
outside that folder; a second run skips every file already present with the published MD5.
"""

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

from monai.apps.utils import check_hash

from pipeline.data.fetch import URL_SCHEMES, ChecksumMismatchError, FetchError, fetch_url
from pipeline.user_errors import UserError

logger = logging.getLogger(__name__)

FIGSHARE_DOWNLOAD_BASE = "https://figshare.com/ndownloader/files"
HASH_TYPE = "md5"
# The published archives are about 200 MB each; a mirror that serves more (a link to /dev/zero) is stopped.
MAX_FILE_BYTES = 4 << 30


@dataclass(frozen=True)
class RemoteFile:
    """One published file.

    Args:
        name: the file name, on figshare and on disk.
        file_id: figshare's id of the file (its download address is ``FIGSHARE_DOWNLOAD_BASE/<file_id>``).
        md5: the published MD5 checksum, or ``None`` where none is known (the file is then not verified).
    """

    name: str
    file_id: int
    md5: str | None


# Ids and MD5 checksums as figshare's API lists them for version 8 of the article.
FIGSHARE_FILES = (
    RemoteFile("brainTumorDataPublic_1-766.zip", 3381290, "74b949ad33f042e6e103523091cd1428"),
    RemoteFile("brainTumorDataPublic_767-1532.zip", 3381296, "7e8a875500d2c8a346f270538e29890e"),
    RemoteFile("brainTumorDataPublic_1533-2298.zip", 3381293, "8227bf6080cb71f15a88be8d25c79ae7"),
    RemoteFile("brainTumorDataPublic_2299-3064.zip", 3381302, "b378a80d6174e5317d59eb28430c6652"),
    RemoteFile("cvind.mat", 7005344, "5ea82eb3212c9fcb84290ccf0beb486d"),
)


class DownloadError(UserError, RuntimeError):
    """A file that could not be fetched or failed its checksum; the message starts with its address."""


def file_url(remote: RemoteFile, mirror: str | os.PathLike | None = None) -> str:
    """The address of ``remote``: figshare's download address, or its name under ``mirror`` (a folder or base URL)."""
    if mirror is None:
        return f"{FIGSHARE_DOWNLOAD_BASE}/{remote.file_id}"
    mirror = str(mirror)
    # One-letter "schemes" are Windows drive letters, i.e. folders.
    scheme = urlparse(mirror).scheme
    if len(scheme) > 1:
        if scheme not in URL_SCHEMES:
            raise DownloadError(f"{mirror}: unsupported mirror address (use a folder or one of {URL_SCHEMES})")
        return f"{mirror.rstrip('/')}/{quote(remote.name)}"
    folder = Path(mirror).expanduser()
    if not folder.is_dir():
        raise DownloadError(f"{mirror}: mirror folder does not exist")
    path = folder.resolve() / remote.name
    if path.exists() and not path.is_file():
        # A pipe or a device would be read without end, and a folder cannot be one.
        raise DownloadError(f"{folder / remote.name}: not a regular file; a mirror folder holds the published files")
    return path.as_uri()


def fetch_files(
    files: Sequence[RemoteFile], out_dir: Path, mirror: str | os.PathLike | None = None, progress: bool = True
) -> list[Path]:
    """Fetch every file of ``files`` into ``out_dir``, skipping those already there with a good checksum.

    A file present under its final name with a wrong checksum is fetched again and replaced only by a good
    copy. Raises ``DownloadError`` naming the address when a file cannot be fetched or fails its checksum.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_fetch(remote, file_url(remote, mirror), out_dir / remote.name, progress) for remote in files]


def download_figshare(out_dir: Path, mirror: str | os.PathLike | None = None, progress: bool = True) -> list[Path]:
    """Fetch the figshare archives and ``cvind.mat`` into ``out_dir`` (see ``fetch_files``)."""
    return fetch_files(FIGSHARE_FILES, out_dir, mirror, progress)


def _fetch(remote: RemoteFile, url: str, target: Path, progress: bool) -> Path:
    if target.is_file():
        if remote.md5 is None:
            logger.info("%s: present, no published checksum to verify it against; kept", target)
            return target
        if check_hash(target, remote.md5, HASH_TYPE):
            logger.info("%s: present with the published %s; skipped", target, HASH_TYPE)
            return target
        logger.warning("%s: %s differs from the published one; fetching it again", target, HASH_TYPE)
    if remote.md5 is None:
        warnings.warn(f"{url}: no published {HASH_TYPE} checksum; the file is not verified", stacklevel=3)
    try:
        return fetch_url(url, target, HASH_TYPE, remote.md5, MAX_FILE_BYTES, progress)
    except ChecksumMismatchError:
        raise DownloadError(
            f"{url}: {HASH_TYPE} checksum mismatch, expected {remote.md5}: the file is damaged or not the "
            f"published {remote.name}; nothing was replaced"
        ) from None
    except FetchError as error:
        raise DownloadError(str(error)) from None
