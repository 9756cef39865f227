"""The node's journal: every series and instance it was given and what became of it, in one SQLite file.

A series moves ``receiving`` -> ``complete`` -> ``segmented`` -> ``sent``, or ends ``failed`` with the reason.
Each step is one committed transaction (SQLite's write-ahead log, fully synced), so after a crash the journal
says what is on disk and what is left to do: a restart segments every ``complete`` series and sends every
``segmented`` one. ``events`` keeps one line per step, per refused or ignored instance and per failed send.

A series' ``generation`` counts its instances: a result made while more instances arrived is discarded (its
``generation`` no longer matches) and the series is segmented again once it is complete.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

JOURNAL_NAME = "journal.sqlite"

RECEIVING, COMPLETE, SEGMENTED, SENT, FAILED = "receiving", "complete", "segmented", "sent", "failed"
STATES = (RECEIVING, COMPLETE, SEGMENTED, SENT, FAILED)
# Instance and send events besides the series' own states.
REJECTED, IGNORED, SEND_FAILED, REOPENED = "rejected", "ignored", "send failed", "reopened"
FAILURE_EVENTS = (FAILED, REJECTED, SEND_FAILED)

NEW, DUPLICATE = "new", "duplicate"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    calling_aet TEXT NOT NULL,
    folder TEXT NOT NULL,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    instances INTEGER NOT NULL DEFAULT 0,
    last_received REAL NOT NULL,
    seg_file TEXT,
    seg_uid TEXT,
    segment_seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_send REAL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    file TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    series_uid TEXT,
    sop_uid TEXT,
    calling_aet TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS series_state ON series (state);
"""


@dataclass(frozen=True)
class SeriesEntry:
    """One row of the journal's ``series`` table."""

    series_uid: str
    study_uid: str
    calling_aet: str
    folder: str
    state: str
    generation: int
    instances: int
    last_received: float
    seg_file: str | None
    seg_uid: str | None
    segment_seconds: float | None
    attempts: int
    next_send: float | None
    reason: str | None


@dataclass(frozen=True)
class Event:
    """One line of the journal's ``events`` table."""

    time: float
    kind: str
    series_uid: str | None
    sop_uid: str | None
    calling_aet: str | None
    detail: str | None


class Journal:
    """The journal in ``folder/journal.sqlite``, shared by the node's threads (one connection, one lock)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / JOURNAL_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _event(
        self,
        db: sqlite3.Connection,
        kind: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        calling_aet: str | None = None,
        detail: str | None = None,
    ) -> None:
        db.execute(
            "INSERT INTO events (time, kind, series_uid, sop_uid, calling_aet, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), kind, series_uid, sop_uid, calling_aet, detail),
        )

    def knows_instance(self, sop_uid: str) -> bool:
        """Whether the instance ``sop_uid`` was received (and spooled) before."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone() is not None

    def add_instance(
        self, sop_uid: str, series_uid: str, study_uid: str, calling_aet: str, folder: str, file: str
    ) -> str:
        """Record the spooled instance ``sop_uid`` of ``series_uid``; ``"duplicate"`` when it was already known
        (nothing changes), else ``"new"``. A new instance of a series that was complete, segmented, sent or
        failed opens it again for receiving, so it is segmented again with all its instances."""
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone():
                return DUPLICATE
            db.execute(
                "INSERT INTO instances (sop_uid, series_uid, file) VALUES (?, ?, ?)", (sop_uid, series_uid, file)
            )
            row = db.execute("SELECT state FROM series WHERE series_uid = ?", (series_uid,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO series (series_uid, study_uid, calling_aet, folder, state, generation, instances, "
                    "last_received) VALUES (?, ?, ?, ?, ?, 1, 1, ?)",
                    (series_uid, study_uid, calling_aet, folder, RECEIVING, now),
                )
                self._event(db, RECEIVING, series_uid, calling_aet=calling_aet)
                return NEW
            if row["state"] in (SEGMENTED, SENT, FAILED):
                detail = f"a new instance after it was {row['state']}"
                self._event(db, REOPENED, series_uid, sop_uid, calling_aet, detail)
            db.execute(
                "UPDATE series SET state = ?, generation = generation + 1, instances = instances + 1, "
                "last_received = ?, calling_aet = ?, seg_file = NULL, seg_uid = NULL, attempts = 0, "
                "next_send = NULL, reason = NULL WHERE series_uid = ?",
                (RECEIVING, now, calling_aet, series_uid),
            )
            return NEW

    def instance_event(self, kind: str, sop_uid: str, series_uid: str | None, calling_aet: str, detail: str) -> None:
        """Record that the instance ``sop_uid`` was ``rejected`` or ``ignored``, and why."""
        with self._transaction() as db:
            self._event(db, kind, series_uid, sop_uid, calling_aet, detail)

    def complete(self, series_uids: list[str] | None = None, quiet_before: float | None = None) -> list[str]:
        """Mark ``complete`` the receiving series among ``series_uids`` (an association that ended) or those whose
        last instance came before ``quiet_before``; return them."""
        with self._transaction() as db:
            rows = db.execute("SELECT series_uid, last_received FROM series WHERE state = ?", (RECEIVING,)).fetchall()
            done = [
                row["series_uid"]
                for row in rows
                if (series_uids is not None and row["series_uid"] in series_uids)
                or (quiet_before is not None and row["last_received"] < quiet_before)
            ]
            for uid in done:
                db.execute("UPDATE series SET state = ? WHERE series_uid = ?", (COMPLETE, uid))
                self._event(db, COMPLETE, uid)
            return done

    def restart_quiet_periods(self) -> int:
        """Start the quiet period of every receiving series again (at a restart, senders may still be resending);
        return how many are receiving."""
        with self._transaction() as db:
            return db.execute("UPDATE series SET last_received = ? WHERE state = ?", (time.time(), RECEIVING)).rowcount

    def next_to_segment(self) -> SeriesEntry | None:
        """The complete series that has waited longest, or None."""
        return self._one("SELECT * FROM series WHERE state = ? ORDER BY last_received LIMIT 1", (COMPLETE,))

    def next_to_send(self, now: float) -> SeriesEntry | None:
        """A segmented series whose send is due at ``now``, or None."""
        return self._one(
            "SELECT * FROM series WHERE state = ? AND (next_send IS NULL OR next_send <= ?) ORDER BY next_send LIMIT 1",
            (SEGMENTED, now),
        )

    def mark_segmented(self, entry: SeriesEntry, seg_file: str, seg_uid: str, seconds: float) -> bool:
        """Record the SEG of ``entry``; False (nothing recorded) when instances arrived since it was taken."""
        return self._finish(
            entry,
            SEGMENTED,
            "seg_file = ?, seg_uid = ?, segment_seconds = ?, attempts = 0, next_send = NULL",
            (seg_file, seg_uid, seconds),
            f"in {seconds:.2f} s",
        )

    def mark_failed(self, entry: SeriesEntry, reason: str) -> bool:
        """Record that ``entry`` cannot be segmented, and why; False when instances arrived since it was taken."""
        return self._finish(entry, FAILED, "reason = ?", (reason,), reason)

    def _finish(self, entry: SeriesEntry, state: str, columns: str, values: tuple, detail: str) -> bool:
        with self._transaction() as db:
            changed = db.execute(
                f"UPDATE series SET state = ?, {columns} WHERE series_uid = ? AND generation = ? AND state = ?",
                (state, *values, entry.series_uid, entry.generation, COMPLETE),
            ).rowcount
            if changed:
                self._event(db, state, entry.series_uid, calling_aet=entry.calling_aet, detail=detail)
            return bool(changed)

    def mark_sent(self, entry: SeriesEntry, destination: str) -> bool:
        """Record that the SEG of ``entry`` was stored at ``destination``; False when the series changed since."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE series SET state = ?, next_send = NULL, reason = NULL WHERE series_uid = ? AND state = ? "
                "AND seg_uid = ?",
                (SENT, entry.series_uid, SEGMENTED, entry.seg_uid),
            ).rowcount
            if changed:
                self._event(db, SENT, entry.series_uid, calling_aet=entry.calling_aet, detail=destination)
            return bool(changed)

    def send_failed(self, entry: SeriesEntry, reason: str, retry_at: float) -> None:
        """Record a failed send of ``entry``'s SEG and when to try again."""
        with self._transaction() as db:
            db.execute(
                "UPDATE series SET attempts = attempts + 1, next_send = ?, reason = ? WHERE series_uid = ? "
                "AND state = ? AND seg_uid = ?",
                (retry_at, reason, entry.series_uid, SEGMENTED, entry.seg_uid),
            )
            self._event(db, SEND_FAILED, entry.series_uid, calling_aet=entry.calling_aet, detail=reason)

    def _one(self, query: str, values: tuple) -> SeriesEntry | None:
        with self._lock:
            row = self._db.execute(query, values).fetchone()
        return None if row is None else SeriesEntry(**dict(row))


def read_journal(folder: Path, failures: int = 10) -> tuple[dict[str, int], list[SeriesEntry], list[Event]]:
    """The journal in ``folder``, read only: the number of series in each state, the pending series (oldest
    first), and the last ``failures`` failure events (newest first). Empty when there is no journal yet."""
    path = folder / JOURNAL_NAME
    counts = dict.fromkeys(STATES, 0)
    if not path.is_file():
        return counts, [], []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        for row in db.execute("SELECT state, COUNT(*) AS n FROM series GROUP BY state"):
            counts[row["state"]] = row["n"]
        pending = [
            SeriesEntry(**dict(row))
            for row in db.execute(
                "SELECT * FROM series WHERE state IN (?, ?, ?) ORDER BY last_received", (RECEIVING, COMPLETE, SEGMENTED)
            )
        ]
        marks = ", ".join("?" * len(FAILURE_EVENTS))
        recent = [
            Event(**{key: row[key] for key in row.keys() if key != "id"})
            for row in db.execute(
                f"SELECT * FROM events WHERE kind IN ({marks}) ORDER BY id DESC LIMIT ?", (*FAILURE_EVENTS, failures)
            )
        ]
    finally:
        db.close()
    return counts, pending, recent
