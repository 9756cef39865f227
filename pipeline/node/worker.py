"""The node's segmentation worker: complete series out of the spool, one at a time, into a DICOM SEG each.

A series is complete when its association was released or no instance came for ``quiet_seconds``. Its spooled
instances are read as ``infer`` reads a DICOM folder and segmented by the one warm :class:`SliceSegmenter`;
the SEG goes to ``<results>/<study>/<series>_seg.dcm`` (names from ``safe_name``), written atomically, and only
then does the journal call the series segmented.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pydicom

from pipeline.dicom.series import read_dicom_folder
from pipeline.inference.scans import SEG_SUFFIX, segment_series
from pipeline.inference.slice_segmenter import SliceSegmenter
from pipeline.node.journal import Journal, SeriesEntry
from pipeline.node.spool import Spool
from pipeline.outputs import output_path, safe_name
from pipeline.user_errors import UserError, find_user_error

log = logging.getLogger("pipeline.node")


class UnusableSeriesError(UserError, ValueError):
    """The spooled instances of a series do not make one series that can be segmented."""


class SegmentationWorker:
    """Segments the complete series of ``journal`` from ``spool`` into ``results`` with ``segmenter``."""

    def __init__(
        self, journal: Journal, spool: Spool, results: Path, segmenter: SliceSegmenter, quiet_seconds: float
    ) -> None:
        self.journal = journal
        self.spool = spool
        self.results = Path(results)
        self.segmenter = segmenter
        self.quiet_seconds = quiet_seconds

    def seg_path(self, entry: SeriesEntry) -> Path:
        """Where the SEG of ``entry`` is written."""
        return output_path(self.results, safe_name(entry.study_uid), f"{safe_name(entry.series_uid)}{SEG_SUFFIX}")

    def step(self) -> bool:
        """Complete the series gone quiet, then segment the one that has waited longest; whether there was one."""
        self.journal.complete(quiet_before=time.time() - self.quiet_seconds)
        entry = self.journal.next_to_segment()
        if entry is None:
            return False
        start = time.perf_counter()
        try:
            path = self._segment(entry)
            seg_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        except Exception as error:  # whatever one series trips on is its failure, not the node's
            reason = str(find_user_error(error) or f"{type(error).__name__}: {error}")
            if self.journal.mark_failed(entry, reason):
                log.error("series %s from %s: %d instances received, failed: %s", *_who(entry), reason)
            return True
        self.journal.mark_segmented(entry, str(path), seg_uid, time.perf_counter() - start)
        return True

    def _segment(self, entry: SeriesEntry) -> Path:
        """Read the spooled series of ``entry``, segment it and write its SEG; ``UnusableSeriesError`` with the
        reason when its instances do not make one usable series."""
        series, problems = read_dicom_folder(self.spool.root / entry.folder, recursive=False)
        found = [item for item in series if item.series_uid == entry.series_uid]
        if not found:
            raise UnusableSeriesError("; ".join(problems) or "no usable instance in the spool")
        path = self.seg_path(entry)
        segment_series(found[0], [path], self.segmenter)
        return path


def _who(entry: SeriesEntry) -> tuple[str, str, int]:
    return entry.series_uid, entry.calling_aet, entry.instances
