"""``serve --status``: whether the node runs, what waits in its queue, and its last failures, from its journal."""

from __future__ import annotations

import datetime

from pipeline.node.config import NodeConfig
from pipeline.node.journal import COMPLETE, FAILED, RECEIVING, SEGMENTED, SENT, read_journal
from pipeline.outputs import one_line
from pipeline.outputs.lock import lock_holder


def status_report(config: NodeConfig, failures: int = 10) -> tuple[bool, list[str]]:
    """Whether the node of ``config`` runs, and the lines that describe it: process, queue, last ``failures``."""
    holder = lock_holder(config.work_dir)
    counts, pending, recent = read_journal(config.work_dir, failures)
    lines = [
        f"node {config.ae_title} on port {config.port}: "
        + (f"running (process {holder})" if holder is not None else "not running"),
        f"queue: {counts[RECEIVING]} receiving, {counts[COMPLETE]} to segment, {counts[SEGMENTED]} to send",
        f"done: {counts[SENT]} sent, {counts[FAILED]} failed",
    ]
    for entry in pending:
        retry = f", try {entry.attempts + 1} at {_time(entry.next_send)}: {entry.reason}" if entry.attempts else ""
        what = f"{one_line(entry.series_uid)} from {entry.calling_aet} ({entry.instances} instances)"
        lines.append(f"  {entry.state} {what}{retry}")
    if recent:
        lines.append(f"last {len(recent)} failures:")
        for event in recent:
            what = f"instance {one_line(event.sop_uid)}" if event.sop_uid else f"series {one_line(event.series_uid)}"
            lines.append(f"  {_time(event.time)} {what} from {event.calling_aet or '?'}: {event.kind}: {event.detail}")
    return holder is not None, lines


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return datetime.datetime.fromtimestamp(seconds).isoformat(sep=" ", timespec="seconds")
