"""Fetch one file by address into its destination folder: streamed, hashed while written, bounded, never a pipe.

Used by ``download`` (the figshare archives) and ``fetch-weights`` (the weights of ``large_files.yml``). The bytes
go into ``<name>.part`` beside the target and nowhere else (no system temporary folder), and that file is renamed
over the target only once complete and matching its checksum; on any failure it is removed. A ``file:`` address
is refused in one line, before it is opened, unless it names a regular file (links followed): a named pipe would
be read without end, ``/dev/zero`` would fill the disk.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import url2pathname, urlopen

from pipeline.inference.discovery import not_a_regular_file
from pipeline.user_errors import UserError

URL_SCHEMES = ("http", "https", "ftp", "file")
PART_SUFFIX = ".part"
CHUNK = 1 << 20
# Seconds a connection or a read may stall before the download fails.
TIMEOUT_S = 60
PROGRESS_STEPS = 10
UNKNOWN_SIZE_PROGRESS_BYTES = 64 << 20


class FetchError(UserError, RuntimeError):
    """A file that could not be fetched; the message is one line starting with its address."""


class ChecksumMismatchError(FetchError):
    """A fetched file whose checksum is not the expected one; nothing was replaced."""


def fetch_url(
    url: str, target: Path, hash_type: str, expected: str | None, max_bytes: int, progress: bool = False
) -> Path:
    """Fetch ``url`` (``http``, ``https``, ``ftp`` or ``file``) into ``target``, whose folder must exist.

    The bytes are written to ``<target>.part`` in ``target``'s folder while their ``hash_type`` digest is computed;
    the file replaces ``target`` only once complete and, where ``expected`` is given, with that digest. More than
    ``max_bytes`` (announced or read) ends the download. Raises ``FetchError`` in one line naming ``url``
    (``ChecksumMismatchError`` for a wrong digest); the partial file is removed and ``target`` left as it was.
    With ``progress``, percentage lines go to standard error.
    """
    target = Path(target)
    part = target.with_name(target.name + PART_SUFFIX)
    part.unlink(missing_ok=True)
    try:
        with _opened(url, max_bytes) as (stream, size):
            digest = _copy(url, stream, size, part, hash_type, max_bytes, progress)
        if expected is not None and digest != expected.lower():
            raise ChecksumMismatchError(f"{url}: {hash_type} is {digest}, expected {expected}; nothing was replaced")
        os.replace(part, target)
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = error.reason if isinstance(error, URLError) and not isinstance(error, HTTPError) else error
        raise FetchError(f"{url}: download failed ({' '.join(str(reason).split())})") from None
    finally:
        part.unlink(missing_ok=True)
    return target


@contextmanager
def _opened(url: str, max_bytes: int) -> Iterator[tuple[BinaryIO, int | None]]:
    """The stream of ``url`` and its announced size, if any; a local file is checked before it is opened."""
    parsed = urlparse(url)
    if parsed.scheme not in URL_SCHEMES:
        raise FetchError(f"{url}: unsupported address (use one of {', '.join(URL_SCHEMES)})")
    if parsed.scheme != "file":
        with urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length", "")
            size = int(length) if length.isdigit() else None
            _check_size(url, size, max_bytes)
            yield response, size
        return
    if parsed.netloc not in ("", "localhost"):
        raise FetchError(f"{url}: a file: address names another host ({parsed.netloc}); use file:///path")
    path = Path(url2pathname(parsed.path))
    _check_local_file(url, path, path.stat(), max_bytes)
    # Not blocking should a pipe be swapped in after the check; fstat then refuses it.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(descriptor, "rb") as stream:
        status = os.fstat(descriptor)
        _check_local_file(url, path, status, max_bytes)
        yield stream, status.st_size


def _check_local_file(url: str, path: Path, status: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = "a folder" if stat.S_ISDIR(status.st_mode) else not_a_regular_file(path) or "not a regular file"
        raise FetchError(f"{url}: not a regular file ({kind}); refused before reading it")
    _check_size(url, status.st_size, max_bytes)


def _check_size(url: str, size: int | None, max_bytes: int) -> None:
    if size is not None and size > max_bytes:
        raise FetchError(f"{url}: {size} bytes, more than the {max_bytes} bytes this download accepts; refused")


def _copy(
    url: str, stream: BinaryIO, size: int | None, part: Path, hash_type: str, max_bytes: int, progress: bool
) -> str:
    """Write ``stream`` into the new file ``part`` (fsynced), at most ``max_bytes``; return its hex digest."""
    digest = hashlib.new(hash_type, usedforsecurity=False)
    written = reported = 0
    with open(part, "xb") as handle:
        while chunk := stream.read(CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise FetchError(f"{url}: more than the {max_bytes} bytes this download accepts; stopped")
            handle.write(chunk)
            digest.update(chunk)
            if progress:
                reported = _report(part.name.removesuffix(PART_SUFFIX), written, size, reported)
        handle.flush()
        os.fsync(handle.fileno())
    if size is not None and written != size:
        raise FetchError(f"{url}: download failed (the connection ended after {written} of {size} bytes)")
    return digest.hexdigest()


def _report(name: str, written: int, size: int | None, reported: int) -> int:
    """Print a progress line when ``written`` passes the next step after ``reported``; return the step reached."""
    step = written * PROGRESS_STEPS // size if size else written // UNKNOWN_SIZE_PROGRESS_BYTES
    if step > reported:
        done = f"{100 * written // size}%" if size else f"{written >> 20} MiB"
        print(f"{name}: {done}", file=sys.stderr, flush=True)
    return max(step, reported)
