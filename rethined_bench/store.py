"""Results database (SQLite, embedded): one row per measured cell, written in a transaction per cell.

A row holds everything needed to defend its number: every sample, the statistics, load times, work counts, the
roofline floor, the environment, the artifact sha256 and the protocol. ``rbench run`` resumes by skipping cells
already stored with status ``ok`` for the same artifact sha256 and protocol. The exported JSON/CSV schema is
documented in ``docs/results-schema.md``.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import RbenchError

SCHEMA_VERSION = 3
STATUSES = ("ok", "failed", "unsupported")
DEFAULT_DB = Path("results") / "rbench.sqlite"

CELL_COLUMNS = ("device", "model", "variant", "height", "width", "target", "precision")  # what Result.cell holds
# one cell measured from one artifact under one protocol: what resume and hosted submissions are keyed by
_MEASUREMENT_COLUMNS = (*CELL_COLUMNS, "artifact_sha256", "protocol_key")
# a hosted cell's jobs, from submission until its result is stored (then deleted in the same transaction)
_SUBMISSIONS_TABLE = "CREATE TABLE IF NOT EXISTS submissions ({}, submission TEXT NOT NULL, created_at TEXT NOT NULL, " \
    "PRIMARY KEY ({}))".format(", ".join(f"{column} {'INTEGER' if column in ('height', 'width') else 'TEXT'} NOT NULL"
                                         for column in _MEASUREMENT_COLUMNS), ", ".join(_MEASUREMENT_COLUMNS))
_MEASUREMENT_KEY = " AND ".join(f"{column} = ?" for column in _MEASUREMENT_COLUMNS)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    device TEXT NOT NULL,
    runner TEXT NOT NULL,
    model TEXT NOT NULL,
    variant TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    target TEXT NOT NULL,
    precision TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'unsupported')),
    reason TEXT,
    artifact TEXT,
    artifact_sha256 TEXT,
    protocol_key TEXT,
    protocol TEXT,
    latency TEXT,
    samples TEXT,
    load TEXT,
    first_inference_ms REAL,
    peak_memory_mb REAL,
    work TEXT,
    roofline TEXT,
    settings TEXT,
    environment TEXT,
    provenance TEXT,
    compile_ms REAL,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS results_cell ON results (device, model, variant, height, width, target, precision);
""" + _SUBMISSIONS_TABLE + ";\n"
_JSON_COLUMNS = ("protocol", "latency", "samples", "load", "work", "roofline", "settings", "environment",
                 "provenance", "receipt")
# schema version → the statements that bring a database of that version to the next one
_MIGRATIONS = {
    1: ("ALTER TABLE results ADD COLUMN compile_ms REAL", "ALTER TABLE results ADD COLUMN receipt TEXT"),
    2: (_SUBMISSIONS_TABLE,),
}



def resolution_label(height: int, width: int) -> str:
    """How a cell's size is written in labels and reports: ``1024`` when square, else ``1024x576`` (H x W)."""
    return str(height) if height == width else f"{height}x{width}"


@dataclass
class Result:
    """One cell's outcome. JSON-valued fields are stored as JSON text."""

    device: str
    runner: str
    model: str
    variant: str
    height: int
    width: int
    target: str
    precision: str
    status: str
    reason: str | None = None
    artifact: str | None = None
    artifact_sha256: str | None = None
    protocol_key: str | None = None
    protocol: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    samples: list[list[float]] | None = None
    load: dict[str, Any] | None = None
    first_inference_ms: float | None = None
    peak_memory_mb: float | None = None
    work: dict[str, Any] | None = None
    roofline: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=lambda: {"source": "measured"})
    compile_ms: float | None = None
    receipt: dict[str, Any] | None = None
    created_at: str = ""
    id: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    @property
    def resolution_label(self) -> str:
        return resolution_label(self.height, self.width)

    @property
    def cell(self) -> tuple[str, str, str, int, int, str, str]:
        return (self.device, self.model, self.variant, self.height, self.width, self.target, self.precision)

    def to_public(self) -> dict[str, Any]:
        """The documented export record (docs/results-schema.md)."""
        latency = self.latency or {}
        work = self.work or {}
        return {
            "model": self.model, "variant": self.variant, "resolution": [self.height, self.width],
            "device": self.device, "runner": self.runner, "target": self.target, "precision": self.precision,
            "status": self.status, "reason": self.reason,
            "latency_ms": {k: latency.get(k) for k in ("median", "min", "max", "p90", "p99", "mean", "std", "cv",
                                                       "n", "processes", "process_medians",
                                                       "median_of_process_medians", "unstable", "reasons")}
            if latency else None,
            "load_ms": {k: (self.load or {}).get(k) for k in ("cold", "warm")} if self.load else None,
            "first_inference_ms": self.first_inference_ms,
            "peak_memory_mb": self.peak_memory_mb,
            "params": work.get("params"), "fvcore_gmacs": work.get("fvcore_gmacs"), "gflops": work.get("gflops"),
            "bytes": work.get("bytes"), "work_data_dependent": bool(work.get("data_dependent", False)),
            "roofline_floor_ms": (self.roofline or {}).get("floor_ms"),
            "roofline_bound": (self.roofline or {}).get("bound"),
            "artifact": self.artifact, "artifact_sha256": self.artifact_sha256,
            "compile_ms": self.compile_ms,
            "protocol": self.protocol, "settings": self.settings, "environment": self.environment,
            "provenance": self.provenance, "receipt": self.receipt, "created_at": self.created_at,
        }


class ResultStore:
    """The SQLite results database at ``path`` (created with the current schema if missing)."""

    def __init__(self, path: str | Path = DEFAULT_DB) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(self._connect()) as db, db:
                row = db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() and \
                    db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if not row:
                    db.executescript(_SCHEMA)
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                else:
                    self._migrate(db, int(row[0]))
        except sqlite3.DatabaseError as exc:
            raise RbenchError(f"{self.path} is not an rbench results database ({exc})") from exc

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """Bring a database written by an older rbench to the current schema, in the open transaction."""
        if version > SCHEMA_VERSION:
            raise RbenchError(f"{self.path} has results schema {version}, newer than this rbench reads "
                              f"({SCHEMA_VERSION}); upgrade rbench")
        for old in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[old]:
                db.execute(statement)
        if version != SCHEMA_VERSION:
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    @property
    def schema_version(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    def add(self, result: Result) -> int:
        """Insert one cell in its own transaction (committed before returning); returns the row id."""
        row = asdict(result)
        row.pop("id")
        row["created_at"] = row["created_at"] or datetime.now(timezone.utc).isoformat(timespec="seconds")
        for column in _JSON_COLUMNS:
            row[column] = None if row[column] is None else json.dumps(row[column])
        columns = ", ".join(row)
        with closing(self._connect()) as db, db:
            cursor = db.execute(f"INSERT INTO results ({columns}) VALUES ({', '.join('?' * len(row))})",
                                tuple(row.values()))
            db.execute(f"DELETE FROM submissions WHERE {_MEASUREMENT_KEY}",
                       (*result.cell, result.artifact_sha256, result.protocol_key))
            return int(cursor.lastrowid)

    def save_submission(self, cell: tuple[str, str, str, int, int, str, str], artifact_sha256: str,
                        protocol_key: str, submission: dict[str, Any]) -> None:
        """Record a cell's hosted jobs as soon as they exist: a later run re-attaches instead of paying again. The
        record goes when the cell's result is stored (:meth:`add`)."""
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO submissions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*cell, artifact_sha256, protocol_key, json.dumps(submission),
                        datetime.now(timezone.utc).isoformat(timespec="seconds")))

    def submission(self, cell: tuple[str, str, str, int, int, str, str], artifact_sha256: str,
                   protocol_key: str) -> dict[str, Any] | None:
        """The jobs a cell was submitted as, while its result is not stored; ``None`` when there are none."""
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT submission FROM submissions WHERE {_MEASUREMENT_KEY}",
                             (*cell, artifact_sha256, protocol_key)).fetchone()
        return json.loads(row[0]) if row else None

    def pending(self, device: str | None = None) -> int:
        """How many cells (of ``device``) have jobs submitted and no result yet."""
        with closing(self._connect()) as db:
            query = "SELECT COUNT(*) FROM submissions" + (" WHERE device = ?" if device else "")
            return int(db.execute(query, (device,) if device else ()).fetchone()[0])

    def has_completed(self, cell: tuple[str, str, str, int, int, str, str], artifact_sha256: str,
                      protocol_key: str) -> bool:
        """Whether this cell (see :attr:`Result.cell`) is stored ``ok`` for this artifact and protocol.

        Keyed by the cell too, not only the artifact: two cells can share an artifact (e.g. RETHINED's upscaling
        variants at the LR size are the same graph) and each needs its own row.
        """
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT 1 FROM results WHERE {_MEASUREMENT_KEY} AND status = 'ok' LIMIT 1",
                             (*cell, artifact_sha256, protocol_key)).fetchone()
        return row is not None

    def all(self, device: str | None = None) -> list[Result]:
        query, args = "SELECT * FROM results", ()
        if device:
            query, args = query + " WHERE device = ?", (device,)
        with closing(self._connect()) as db:
            return [_to_result(row) for row in db.execute(query + " ORDER BY id", args)]

    def latest(self, device: str | None = None) -> list[Result]:
        """The newest row of each cell (device, model, variant, resolution, target, precision)."""
        newest: dict[tuple, Result] = {}
        for result in self.all(device):
            newest[result.cell] = result
        return sorted(newest.values(), key=lambda r: (r.device, r.model, r.variant, r.height, r.width))

    def devices(self) -> list[str]:
        with closing(self._connect()) as db:
            return [row[0] for row in db.execute("SELECT DISTINCT device FROM results ORDER BY device")]


def _to_result(row: sqlite3.Row) -> Result:
    data = dict(row)
    for column in _JSON_COLUMNS:
        if data[column] is not None:
            data[column] = json.loads(data[column])
    return Result(**data)


def iter_public(results: list[Result]) -> Iterator[dict[str, Any]]:
    for result in results:
        yield result.to_public()
