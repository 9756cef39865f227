"""``large_files.yml`` in the model-zoo form: weights hosted elsewhere, each with its URL and hash.

Read and written through MONAI's ``ConfigParser`` (which needs PyYAML for YAML)::

    large_files:
      - path: "models/model.pt"
        url: "https://example.org/releases/brain_tumor_mri_2d_segmentation_v0.1.0/model.pt"
        hash_val: "<hex digest>"
        hash_type: "sha256"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from monai.apps.utils import check_hash
from monai.bundle import ConfigParser

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.data.fetch import ChecksumMismatchError, FetchError, fetch_url
from pipeline.export.errors import BundleExportError
from pipeline.export.package import digest_of, sha256_of
from pipeline.outputs import output_path, own_subfolder

LARGE_FILES = "large_files.yml"
ENTRY_KEYS = ("path", "url", "hash_val", "hash_type")
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")
# The bundle's weights are some tens of MB; a URL that serves more (a link to /dev/zero) is stopped.
MAX_WEIGHTS_BYTES = 2 << 30


def read_large_files(bundle_dir: Path) -> list[dict[str, str]]:
    """The entries of ``bundle_dir/large_files.yml``, each checked to hold a relative path, a URL and a hash;
    ``BundleExportError`` in one line for a file that is not readable YAML or an entry that is not so."""
    path = bundle_dir / LARGE_FILES
    try:
        content = ConfigParser.load_config_file(str(path))
    except (OSError, ValueError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())
        raise BundleExportError(f"{path}: cannot be read as YAML ({reason})") from None
    entries = content.get("large_files") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise BundleExportError(f"{path}: expected a 'large_files' list of {{{', '.join(ENTRY_KEYS)}}} entries")
    for index, entry in enumerate(entries):
        where = f"{path}: large_files[{index}]"
        if not isinstance(entry, dict) or any(not isinstance(entry.get(key), str) for key in ENTRY_KEYS):
            raise BundleExportError(f"{where}: needs the text fields {', '.join(ENTRY_KEYS)}")
        if entry["hash_type"] not in HASH_TYPES:
            raise BundleExportError(f"{where}: hash_type {entry['hash_type']!r} is not one of {HASH_TYPES}")
        if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
            raise BundleExportError(f"{where}: path {entry['path']!r} must stay inside the bundle")
    return entries


def write_large_files(bundle_dir: Path, relative_paths: Sequence[str], base_url: str | None = None) -> None:
    """Write ``bundle_dir/large_files.yml`` listing ``relative_paths`` with their SHA-256.

    Each file is listed at ``<base_url>/<file name>``: the publisher uploads it there, and ``fetch_large_files``
    brings it back into any copy. Without ``base_url`` a file keeps the URL the bundle's list gives it where the
    listed hash is still the file's own, and gets none where the bytes changed (the hosted copy is other weights).
    """
    listed = {} if base_url is not None else {entry["path"]: entry for entry in read_large_files(bundle_dir)}
    entries = []
    for relative in relative_paths:
        sha256 = sha256_of(bundle_dir / relative)
        url = f"{base_url.rstrip('/')}/{Path(relative).name}" if base_url is not None else ""
        before = listed.get(relative)
        if before is not None:
            listed_type = before["hash_type"]
            current = sha256 if listed_type == "sha256" else digest_of(bundle_dir / relative, listed_type)
            url = before["url"] if current == before["hash_val"] else ""
        entries.append({"path": relative, "url": url, "hash_val": sha256, "hash_type": "sha256"})
    with atomic_path(bundle_dir / LARGE_FILES) as tmp:
        ConfigParser.export_config_file({"large_files": entries}, tmp, fmt="yaml", sort_keys=False)


def refresh_large_file_hashes(bundle_dir: Path) -> None:
    """Put the SHA-256 of each file of ``bundle_dir/large_files.yml`` as it is now in place of its old hash,
    keeping the file's URLs and comments."""
    path = bundle_dir / LARGE_FILES
    text = path.read_text(encoding="utf-8")
    for entry in read_large_files(bundle_dir):
        if entry["hash_type"] != "sha256":
            raise BundleExportError(f"{path}: {entry['path']} has a {entry['hash_type']} hash; expected sha256")
        text = text.replace(entry["hash_val"], sha256_of(bundle_dir / entry["path"]))
    write_text_atomic(path, text)


def fetch_large_files(bundle_dir: Path) -> list[Path]:
    """Download every file of ``bundle_dir/large_files.yml`` that is missing; return all their paths.

    Each file is streamed into ``<name>.part`` beside its place in the bundle (``pipeline.data.fetch``), at most
    ``MAX_WEIGHTS_BYTES``, and renamed into place only once its hash is the listed one, so an interrupted or
    corrupted download never leaves a usable-looking file, nor anything outside the bundle. ``file://`` URLs work;
    one naming no regular file (a named pipe, a device) is refused before it is opened. Every listed path is
    checked before anything is written: its folders must be the bundle's own (no link, ``own_subfolder``) and the
    path must stay inside the bundle. An entry without a URL (weights shipped in the repository), a present file
    with another hash, a failed download or a wrong hash each end in one line naming the file and what to do.
    """
    entries = read_large_files(bundle_dir)
    targets = [_listed_target(bundle_dir, entry["path"]) for entry in entries]
    for entry, target in zip(entries, targets, strict=True):
        if target.is_file():
            if not check_hash(target, entry["hash_val"], entry["hash_type"]):
                raise BundleExportError(
                    f"{target}: exists but its {entry['hash_type']} differs from {LARGE_FILES}; "
                    "move it away to fetch again"
                )
            continue
        if not entry["url"]:
            raise BundleExportError(
                f"{target}: missing, and {LARGE_FILES} lists no URL for it; weights that ship inside the repository "
                "come back with `git checkout -- <path>`"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fetch_url(entry["url"], target, entry["hash_type"], entry["hash_val"], MAX_WEIGHTS_BYTES)
        except ChecksumMismatchError:
            raise BundleExportError(
                f"{entry['url']}: {entry['hash_type']} differs from {LARGE_FILES}; {target} was not written"
            ) from None
        except FetchError as error:
            raise BundleExportError(str(error)) from None
    return targets


def _listed_target(bundle_dir: Path, relative: str) -> Path:
    """Where the listed ``relative`` path lands: through folders of the bundle's own, never a link, inside it."""
    folders = Path(relative).parent.parts
    if folders:
        own_subfolder(bundle_dir, *folders)
    return output_path(bundle_dir, relative)
