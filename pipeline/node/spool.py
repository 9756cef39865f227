"""The node's spool: each received instance on disk, written atomically, before its sender hears success.

Instances lie in ``<spool>/<study>/<series>/<instance>.dcm``, each name made from the instance's UIDs by
``safe_name`` and placed by ``output_path``, so no UID, however hostile, leads outside the spool.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.atomic import atomic_path, remove_stale_temporaries_below
from pipeline.outputs import output_path, safe_name


class Spool:
    """The spool folder ``root`` (created if needed)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, study_uid: str, series_uid: str) -> Path:
        """The folder of the series ``series_uid`` of ``study_uid``."""
        return output_path(self.root, safe_name(study_uid), safe_name(series_uid))

    def write(self, study_uid: str, series_uid: str, sop_uid: str, encoded: bytes) -> Path:
        """Write the instance ``sop_uid`` (``encoded``: a DICOM file's bytes) atomically; return its path."""
        path = output_path(self.folder(study_uid, series_uid), f"{safe_name(sop_uid)}.dcm")
        with atomic_path(path) as temporary:
            temporary.write_bytes(encoded)
        return path

    def relative(self, path: Path) -> str:
        """``path`` relative to the spool, as the journal records it."""
        return str(Path(path).relative_to(self.root))

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove what writes cut short by a crash left; call it before the node listens."""
        return remove_stale_temporaries_below(self.root)
