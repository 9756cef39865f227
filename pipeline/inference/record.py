"""``inference_record.json``: what an ``infer`` run did, for the pipelines and people that use its outputs.

The record names the bundle and its version, the SHA-256 of the weights file and of every model in it (each
fold model of an ensemble, and whether the run used it), the settings of the run, and every
input with its outputs and status: ``written``, ``skipped`` (its outputs were already complete) or ``failed``
(with the reason), and a note where the input was read otherwise than stored (a colour PNG read as greyscale).
The run itself is ``running``, ``finished``, or ``failed`` with the error that stopped it. It is written
atomically beside the outputs, so a reader never sees half a record.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.atomic import write_text_atomic

RECORD_NAME = "inference_record.json"
WRITTEN, SKIPPED, FAILED, PENDING = "written", "skipped", "failed", "pending"
RUNNING, FINISHED = "running", "finished"


@dataclass
class InputOutcome:
    """One input of an ``infer`` run.

    Args:
        input: the input file; for a DICOM series, its label (folder, series number, description and UID).
        outputs: the files written (or to be written) for it: its mask or SEG, then its overlay or the SEG's
            NIfTI copy if any.
        status: ``pending`` (not done yet), ``written``, ``skipped`` or ``failed``.
        reason: why it was skipped or failed; empty otherwise.
        note: how the input was read, where that differs from how it is stored; empty otherwise.
        size: the input file's size in bytes, which tells the same file from another of its name (None for a DICOM
            series).
    """

    input: str
    outputs: list[str] = field(default_factory=list)
    status: str = WRITTEN
    reason: str = ""
    note: str = ""
    size: int | None = None


def write_inference_record(
    output_dir: str | os.PathLike,
    bundle_dir: str | os.PathLike,
    weights: Mapping[str, Any],
    settings: Mapping[str, Any],
    outcomes: Sequence[InputOutcome],
    state: str = FINISHED,
    error: str = "",
) -> Path:
    """Write ``<output_dir>/inference_record.json`` atomically and return its path.

    ``settings`` are the run's options and overrides as JSON values; ``weights`` describes the weights file as
    ``pipeline.checkpoints.describe_weights`` does. A run writes its record before its first output (every
    input ``pending``, ``state`` running) and again as inputs end, so a run that is killed leaves a record
    of what it had done, never an earlier run's; a run stopped by an error (``state`` failed) names it.
    """
    metadata = json.loads((Path(bundle_dir) / "configs" / "metadata.json").read_text(encoding="utf-8"))
    record = {
        "bundle": {"folder": str(bundle_dir), "name": metadata.get("name"), "version": metadata.get("version")},
        "pipeline_version": __version__,
        "state": state,
        **({"error": error} if error else {}),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights": dict(weights),
        "settings": dict(settings),
        "counts": dict(Counter(outcome.status for outcome in outcomes)),
        "inputs": [asdict(outcome) for outcome in outcomes],
    }
    path = Path(output_dir) / RECORD_NAME
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path
