"""``rbench merge``: combine results databases written on different machines (one device each) into one.

The rule (also in the README, "Results from many machines"):

* A row's measurement key is its cell (device, model, variant, height, width, target, precision), its
  ``protocol_key`` and its ``artifact_sha256``. A row lacking either of the last two (ingested numbers, a cell that
  failed before its artifact existed) adds its ``created_at`` and its provenance, so such rows only collapse with
  copies of themselves.
* Rows with the same key are one measurement: the output keeps the one with the newest ``created_at``; on a tie, the
  first read (the output's own row, then the inputs in the order given). Identical copies collapse to one.
* Every other row is kept, so a cell keeps its history (older artifacts and protocols, failures, ingested numbers).
* The output's rows are rewritten in ``created_at`` order (ties in read order) and renumbered from 1:
  :meth:`ResultStore.latest` takes a cell's last row by id, which must then be its newest.
* A pending submission is carried over only when the output has no result for its cell, artifact and protocol (the
  first read wins on a clash); one the output held is dropped once a merged result answers it, as
  :meth:`ResultStore.add` does.

Inputs are never written: each is copied to a temporary file and opened there through :class:`ResultStore`, which
migrates older schemas. The output is read and rewritten in one transaction.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .errors import RbenchError
from .store import CELL_COLUMNS, ResultStore

Row = dict[str, Any]  # one table row as stored: column name → value (JSON columns as text)


@dataclass(frozen=True)
class InputSummary:
    """What one input contributed: ``added`` rows are in the output now; the rest were duplicates."""

    path: Path
    read: int
    added: int
    submissions: int  # pending submissions carried over

    @property
    def skipped(self) -> int:
        return self.read - self.added


@dataclass(frozen=True)
class MergeSummary:
    """What ``rbench merge`` did: one summary per input, in the order given, and the output's row counts."""

    output: Path
    inputs: list[InputSummary]
    before: int  # rows the output held before the merge
    after: int


def measurement_key(row: Row) -> tuple:
    """Rows with equal keys are the same measurement (module docstring)."""
    key = (*(row[column] for column in CELL_COLUMNS), row["protocol_key"], row["artifact_sha256"])
    if row["protocol_key"] is None or row["artifact_sha256"] is None:
        return (*key, row["created_at"], _canonical(row["provenance"]))
    return key


def _canonical(provenance: str | None) -> str | None:
    """The provenance JSON with sorted keys, so equal provenance compares equal however it was written."""
    return None if provenance is None else json.dumps(json.loads(provenance), sort_keys=True)


def created(row: Row) -> datetime:
    """A row's ``created_at`` as an aware time (naive values are UTC, as rbench writes them)."""
    try:
        moment = datetime.fromisoformat(row["created_at"])
    except ValueError as exc:
        cell = " ".join(str(row[column]) for column in CELL_COLUMNS)
        raise RbenchError(f"a row of {cell} has created_at {row['created_at']!r}, not an ISO-8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def merge_rows(sources: Sequence[Sequence[Row]]) -> list[tuple[int, Row]]:
    """The rows to keep from ``sources`` (the output's rows first, then each input's), each with the index of its
    source, oldest first: the newest row of each measurement key, the first read on a tie."""
    kept: dict[tuple, tuple[int, int, Row]] = {}  # key → (source, read position, row)
    position = 0
    for source, rows in enumerate(sources):
        for row in rows:
            key = measurement_key(row)
            if key not in kept or created(row) > created(kept[key][2]):
                kept[key] = (source, position, row)
            position += 1
    ordered = sorted(kept.values(), key=lambda item: (created(item[2]), item[1]))
    return [(source, row) for source, _, row in ordered]


def submission_key(row: Row) -> tuple:
    """What a submission waits for: a result of this cell, artifact and protocol."""
    return (*(row[column] for column in CELL_COLUMNS), row["artifact_sha256"], row["protocol_key"])


def pending_submissions(sources: Sequence[Sequence[Row]], results: Sequence[Row]) -> list[tuple[int, Row]]:
    """The submissions to keep from ``sources`` (output first), each with its source index: the first of each key
    that no row of ``results`` answers."""
    answered = {submission_key(row) for row in results}
    kept: dict[tuple, tuple[int, Row]] = {}
    for source, rows in enumerate(sources):
        for row in rows:
            key = submission_key(row)
            if key not in answered and key not in kept:
                kept[key] = (source, row)
    return list(kept.values())


def merge_stores(inputs: Sequence[Path], output: Path) -> MergeSummary:
    """Merge the results databases ``inputs`` into ``output`` (created if missing) by the module's rule."""
    with tempfile.TemporaryDirectory(prefix="rbench-merge-") as scratch:
        tables = [_read_input(path, Path(scratch) / f"{index}.sqlite") for index, path in enumerate(inputs)]
    if output.exists():
        _require_store(output)
    ResultStore(output)  # creates it, or migrates an older schema
    with closing(sqlite3.connect(output, timeout=30, isolation_level=None)) as db:
        db.row_factory = sqlite3.Row
        db.execute("BEGIN IMMEDIATE")  # no writer slips in between reading the output and rewriting it
        with db:
            existing, waiting = _rows(db, "results"), _rows(db, "submissions")
            results = merge_rows([existing, *(rows for rows, _ in tables)])
            submissions = pending_submissions([waiting, *(subs for _, subs in tables)], [row for _, row in results])
            _rewrite(db, [row for _, row in results], [row for _, row in submissions])
    summaries = [InputSummary(path, len(rows), _count(results, index), _count(submissions, index))
                 for index, (path, (rows, _)) in enumerate(zip(inputs, tables), start=1)]
    return MergeSummary(output, summaries, len(existing), len(results))


def _count(kept: list[tuple[int, Row]], source: int) -> int:
    return sum(1 for index, _ in kept if index == source)


def _require_store(path: Path) -> None:
    """Refuse, without writing to it, a path that is not an rbench results database."""
    if not path.is_file():
        raise RbenchError(f"no results database at {path}")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise RbenchError(f"{path} is not an rbench results database ({exc})") from exc
    if version is None:
        raise RbenchError(f"{path} is not an rbench results database (no schema version)")


def _read_input(path: Path, copy: Path) -> tuple[list[Row], list[Row]]:
    """An input's results and submissions, read from a migrated copy so the input itself is never written."""
    _require_store(path)
    shutil.copyfile(path, copy)
    try:
        ResultStore(copy)
    except RbenchError as exc:  # name the input, not the copy
        raise RbenchError(str(exc).replace(str(copy), str(path))) from exc
    with closing(sqlite3.connect(copy)) as db:
        db.row_factory = sqlite3.Row
        return _rows(db, "results"), _rows(db, "submissions")


def _rows(db: sqlite3.Connection, table: str) -> list[Row]:
    return [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]


def _rewrite(db: sqlite3.Connection, results: list[Row], submissions: list[Row]) -> None:
    """Replace both tables' contents: results renumbered in the given order, submissions as given."""
    db.execute("DELETE FROM results")
    db.execute("DELETE FROM submissions")
    for number, row in enumerate(results, start=1):
        _insert(db, "results", row | {"id": number})
    for row in submissions:
        _insert(db, "submissions", row)


def _insert(db: sqlite3.Connection, table: str, row: Row) -> None:
    db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
