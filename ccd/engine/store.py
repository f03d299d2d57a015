"""The durable job table: one aiosqlite connection, WAL, a versioned schema.

This is the only module that imports aiosqlite. Reads are ``get_*``/``list_*``; all writes of
a running engine go through `apply`, which commits one `Batch` (every state change of one turn
of the scheduler) in one transaction, so a change is durable before the scheduler acts on it.

Durability: WAL with ``synchronous=NORMAL`` survives a crash of the process (``kill -9``) with
every committed transaction intact; only a power loss can drop the last few, which the
reattach logic tolerates because status files on the job's host are the second witness.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiosqlite

from ccd.errors import NotFound, StoreError
from ccd.models import TERMINAL, JobState, WorkflowState
from ccd.usage import Request, Usage

# Two tables only written while a workflow runs, kept for their readers: `edges` for export
# (`list_edges`) and the web view's graph of a stored workflow; `events`, every committed
# change in order, for the web view's history and for replaying the server-sent events a
# client missed (`list_events(after_id=` the last id it saw `)`).
_SCHEMA_V1 = """
CREATE TABLE workflows (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    base_dir    TEXT NOT NULL,
    state       TEXT NOT NULL,
    fail_fast   INTEGER NOT NULL DEFAULT 0,
    request_id  TEXT UNIQUE,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE jobs (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    seq         INTEGER NOT NULL,       -- the job's place in its file
    state       TEXT NOT NULL,
    host        TEXT NOT NULL,
    spec        TEXT NOT NULL,          -- JSON: what the engine needs to run it after a restart
    attempts    INTEGER NOT NULL DEFAULT 0,
    exit_code   INTEGER,
    signal      INTEGER,
    reason      TEXT,
    progress    INTEGER,
    message     TEXT,
    started_at  REAL,
    ended_at    REAL,
    PRIMARY KEY (workflow_id, name)
) WITHOUT ROWID;
CREATE INDEX jobs_unfinished ON jobs(workflow_id)
    WHERE state IN ('waiting', 'ready', 'running');
CREATE TABLE edges (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    parent      TEXT NOT NULL,
    child       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, parent, child)
) WITHOUT ROWID;
CREATE TABLE attempts (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    job         TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    host        TEXT NOT NULL,
    run_dir     TEXT NOT NULL,
    started_at  REAL NOT NULL,
    pid         INTEGER,
    ended_at    REAL,
    exit_code   INTEGER,
    signal      INTEGER,
    reason      TEXT,
    log_offset  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, job, attempt)
) WITHOUT ROWID;
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    job         TEXT,                   -- NULL for a change of the workflow itself
    at          REAL NOT NULL,
    old         TEXT,
    new         TEXT NOT NULL,
    reason      TEXT
);
CREATE INDEX events_by_workflow ON events(workflow_id, id);
"""

# No query reads jobs by state, and keeping this index cost a 100,000-job submit ~0.5 s.
_DROP_JOBS_UNFINISHED = "DROP INDEX jobs_unfinished;"

# Event ids are what a reconnecting event stream resumes after, so they must never be reused:
# without AUTOINCREMENT, deleting the newest workflow (its events cascade) would hand its ids
# to the next events, and a client holding one of them would skip those.
_EVENTS_AUTOINCREMENT = """
CREATE TABLE events_v3 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    job         TEXT,
    at          REAL NOT NULL,
    old         TEXT,
    new         TEXT NOT NULL,
    reason      TEXT
);
INSERT INTO events_v3 SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_v3 RENAME TO events;
CREATE INDEX events_by_workflow ON events(workflow_id, id);
"""

T = TypeVar("T")

# What each attempt used and asked for (issue 16: the request as the backend knew it, which
# for Slurm is what sacct reports as allocated); a workflow's own notify settings, which a
# daemon restarted before the workflow ends must still know.
_USAGE_AND_NOTIFY = """
CREATE TABLE usage (
    workflow_id   TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    job           TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    wall_s        REAL,
    cpu_s         REAL,
    max_rss_bytes INTEGER,
    req_cpus      INTEGER,
    req_mem_bytes INTEGER,
    req_time_s    REAL,
    PRIMARY KEY (workflow_id, job, attempt)
) WITHOUT ROWID;
CREATE TABLE notify (
    workflow_id TEXT PRIMARY KEY REFERENCES workflows(id) ON DELETE CASCADE,
    spec        TEXT NOT NULL               -- JSON: a list of the file's notifiers
) WITHOUT ROWID;
"""

# Set on every connection.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
    "PRAGMA temp_store=MEMORY",
)

# Dynamic workflows: what each succeeded attempt wrote to $CCD_OUTPUTS (a matrix group's,
# which runs no attempt, as attempt 0). JSON text: {"key": "value", ...}.
_OUTPUTS = """
CREATE TABLE outputs (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    job         TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (workflow_id, job, attempt)
) WITHOUT ROWID;
"""

# MIGRATIONS[i] takes the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[str] = [
    _SCHEMA_V1,
    _DROP_JOBS_UNFINISHED,
    _EVENTS_AUTOINCREMENT,
    _OUTPUTS,
    _USAGE_AND_NOTIFY,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    id: str
    name: str
    source: str
    base_dir: str
    state: WorkflowState
    fail_fast: bool
    request_id: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class JobRecord:
    workflow_id: str
    name: str
    state: JobState
    host: str
    spec: dict[str, Any]
    attempts: int = 0
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    progress: int | None = None
    message: str | None = None
    started_at: float | None = None
    ended_at: float | None = None


class NewJob(NamedTuple):
    """A job as a submit stores it: waiting, no attempt yet. A named tuple rather than a
    `JobRecord`: a submit builds one per job, and a frozen dataclass costs 10x as much."""

    name: str
    host: str
    spec: dict[str, Any]  # JSON-able: what the engine needs to run it after a restart


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    workflow_id: str
    job: str
    attempt: int
    host: str
    run_dir: str
    started_at: float
    pid: int | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    log_offset: int = 0
    usage: UsageRecord | None = None  # what it used (a table of its own), where known


@dataclass(frozen=True, slots=True)
class Transition:
    """One job state change and the job columns it sets."""

    workflow_id: str
    job: str
    old: JobState
    new: JobState
    at: float
    reason: str | None = None
    attempts: int | None = None  # set exactly when an attempt starts
    exit_code: int | None = None
    signal: int | None = None


@dataclass(frozen=True, slots=True)
class JobNote:
    """Why a job stays in its state, e.g. Slurm's reason for keeping it pending."""

    workflow_id: str
    job: str
    state: JobState
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    workflow_id: str
    job: str
    attempt: int
    percent: int | None
    message: str | None
    log_offset: int


@dataclass(frozen=True, slots=True)
class WorkflowChange:
    workflow_id: str
    old: WorkflowState
    new: WorkflowState
    at: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    workflow_id: str
    job: str | None
    at: float
    old: str | None
    new: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one attempt used and asked for; a later record of it fills in what an earlier
    one did not know (Slurm's accounting comes after the end)."""

    workflow_id: str
    job: str
    attempt: int
    usage: Usage
    request: Request | None = None


@dataclass(slots=True)
class Batch:
    """Everything one turn of the scheduler changed; committed as one transaction."""

    transitions: list[Transition] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)  # upserted whole
    progress: list[ProgressUpdate] = field(default_factory=list)
    workflows: list[WorkflowChange] = field(default_factory=list)
    notes: list[JobNote] = field(default_factory=list)
    growth: Growth = field(default_factory=lambda: Growth())
    usage: list[UsageRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.transitions
            or self.attempts
            or self.progress
            or self.workflows
            or self.notes
            or self.growth
            or self.usage
        )

    def extend(self, later: Batch) -> None:
        """Append the changes of ``later`` (made after these) to this batch."""
        self.transitions += later.transitions
        self.attempts += later.attempts
        self.progress += later.progress
        self.workflows += later.workflows
        self.notes += later.notes
        self.growth.extend(later.growth)
        self.usage += later.usage


@dataclass(slots=True)
class Growth:
    """What dynamic workflows add in a turn: jobs (waiting; their first transitions follow
    in the same batch), edges, and outputs. Written before the batch's transitions."""

    jobs: list[tuple[str, int, NewJob]] = field(default_factory=list)  # (workflow, seq, job)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (workflow, parent, child)
    outputs: list[tuple[str, str, int, dict[str, str]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.edges or self.outputs)

    def extend(self, later: Growth) -> None:
        self.jobs += later.jobs
        self.edges += later.edges
        self.outputs += later.outputs


def new_workflow_id() -> str:
    """A short id a user can type: 10 hex digits (collisions retried by the caller)."""
    return secrets.token_hex(5)


class Store:
    """The one connection to the state database."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        store = cls(conn, path)
        try:
            await store._configure()
            await store._migrate()
        except sqlite3.DatabaseError as err:  # e.g. "file is not a database"
            await conn.close()
            raise StoreError(f"{path}: {err}") from err
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def _configure(self) -> None:
        for pragma in PRAGMAS:
            await self._conn.execute(pragma)

    async def _migrate(self) -> None:
        version = await self._scalar("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this ccd "
                f"understands ({SCHEMA_VERSION}); upgrade ccd"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump rides in the same script.
            await self._conn.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version={target};\nCOMMIT;"
            )

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def _in_thread(self, write: Callable[..., None], *args: Any) -> None:
        """Run ``write(db, *args)`` as one transaction, in one trip to the database thread.

        The thread runs one call at a time, so no other statement (another request's, or the
        scheduler's batch) can land inside the transaction; a transaction spread over several
        awaits could interleave with one (SQLite: "cannot start a transaction within a
        transaction"). One trip is also cheaper than one per statement."""
        # aiosqlite's way of running a function in its thread (Connection._execute).
        await self._conn._execute(_transaction, self._conn._conn, write, *args)  # type: ignore[no-untyped-call]

    async def read(self, read: Callable[..., T], *args: Any) -> T:
        """``read(db, *args)`` on the database thread: its queries see one state of the
        database, as no write can land between them (the thread runs one call at a time)."""
        result: T = await self._conn._execute(read, self._conn._conn, *args)  # type: ignore[no-untyped-call]
        return result

    # -- writes ---------------------------------------------------------------------------

    async def put_workflow(
        self,
        wf: WorkflowRecord,
        jobs: Iterable[NewJob],
        edges: Iterable[tuple[str, str]],
        notify: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Insert a workflow with all its jobs, edges and notifiers, atomically."""
        await self._in_thread(_insert_workflow, wf, jobs, edges, notify)

    async def apply(self, batch: Batch) -> None:
        """Commit one turn's changes in one transaction."""
        if batch:
            await self._in_thread(_write_batch, batch)

    async def delete_workflow(self, workflow_id: str) -> None:
        await self._in_thread(_delete_workflow, workflow_id)

    # -- reads ----------------------------------------------------------------------------

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord:
        async with self._conn.execute("SELECT * FROM workflows WHERE id=?", (workflow_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no workflow '{workflow_id}'")
        return workflow_record(row)

    async def find_request(self, request_id: str) -> str | None:
        """The workflow submitted earlier under this client request id, if any."""
        value = await self._scalar("SELECT id FROM workflows WHERE request_id=?", (request_id,))
        return None if value is None else str(value)

    async def list_workflows(self, *, unfinished_only: bool = False) -> list[WorkflowRecord]:
        sql = "SELECT * FROM workflows"
        if unfinished_only:
            sql += " WHERE state='running'"
        async with self._conn.execute(sql + " ORDER BY created_at") as cur:
            return [workflow_record(row) for row in await cur.fetchall()]

    async def has_job(self, workflow_id: str, name: str) -> bool:
        sql = "SELECT 1 FROM jobs WHERE workflow_id=? AND name=?"
        return await self._scalar(sql, (workflow_id, name)) is not None

    async def list_jobs(self, workflow_id: str) -> list[JobRecord]:
        async with self._conn.execute(
            "SELECT * FROM jobs WHERE workflow_id=? ORDER BY seq", (workflow_id,)
        ) as cur:
            return [_job(row) for row in await cur.fetchall()]

    async def list_edges(self, workflow_id: str) -> list[tuple[str, str]]:
        async with self._conn.execute(
            "SELECT parent, child FROM edges WHERE workflow_id=?", (workflow_id,)
        ) as cur:
            return [(str(p), str(c)) for p, c in await cur.fetchall()]

    async def list_outputs(self, workflow_id: str) -> dict[str, dict[str, str]]:
        """Each job's outputs, from its latest attempt that has any."""
        async with self._conn.execute(
            "SELECT job, data FROM outputs WHERE workflow_id=? ORDER BY job, attempt",
            (workflow_id,),
        ) as cur:
            return {str(job): json.loads(data) for job, data in await cur.fetchall()}

    async def list_attempts(self, workflow_id: str, job: str | None = None) -> list[AttemptRecord]:
        sql, params = "SELECT * FROM attempts WHERE workflow_id=?", [workflow_id]
        if job is not None:
            sql, params = sql + " AND job=?", [*params, job]
        async with self._conn.execute(sql + " ORDER BY job, attempt", params) as cur:
            return [AttemptRecord(*row) for row in await cur.fetchall()]

    async def list_usage(
        self, workflow_id: str, job: str | None = None
    ) -> dict[tuple[str, int], UsageRecord]:
        """What each attempt of a workflow (or of one of its jobs) used, by (job, attempt)."""
        sql, params = "SELECT * FROM usage WHERE workflow_id=?", [workflow_id]
        if job is not None:
            sql, params = sql + " AND job=?", [*params, job]
        async with self._conn.execute(sql, params) as cur:
            records = [_usage_record(row) for row in await cur.fetchall()]
        return {(r.job, r.attempt): r for r in records}

    async def get_notify(self, workflow_id: str) -> list[dict[str, Any]]:
        """A workflow's own notifiers, as stored (JSON objects)."""
        spec = await self._scalar("SELECT spec FROM notify WHERE workflow_id=?", (workflow_id,))
        return [] if spec is None else list(json.loads(spec))

    async def list_events(
        self, workflow_id: str | None = None, *, after_id: int = 0, limit: int = 10_000
    ) -> list[EventRecord]:
        params: list[object]
        sql, params = "SELECT * FROM events WHERE id>?", [after_id]
        if workflow_id is not None:
            sql, params = sql + " AND workflow_id=?", [*params, workflow_id]
        async with self._conn.execute(sql + " ORDER BY id LIMIT ?", [*params, limit]) as cur:
            return [EventRecord(*row) for row in await cur.fetchall()]


def _transaction(db: sqlite3.Connection, write: Callable[..., None], *args: Any) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        write(db, *args)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def commit_batch(db: sqlite3.Connection, batch: Batch) -> None:
    """One turn's changes in one transaction, as `Store.apply` commits them (for the
    benchmark's durable floor, which calls it in a plain thread)."""
    _transaction(db, _write_batch, batch)


def _insert_workflow(
    db: sqlite3.Connection,
    wf: WorkflowRecord,
    jobs: Iterable[NewJob],
    edges: Iterable[tuple[str, str]],
    notify: Sequence[dict[str, Any]] = (),
) -> None:
    db.execute(
        "INSERT INTO workflows VALUES (?,?,?,?,?,?,?,?,?)",
        (
            wf.id,
            wf.name,
            wf.source,
            wf.base_dir,
            wf.state,
            int(wf.fail_fast),
            wf.request_id,
            wf.created_at,
            wf.updated_at,
        ),
    )
    db.executemany(
        "INSERT INTO jobs (workflow_id, name, seq, state, host, spec) VALUES (?,?,?,?,?,?)",
        (
            (wf.id, name, seq, JobState.WAITING, host, _to_json(spec))
            for seq, (name, host, spec) in enumerate(jobs)
        ),
    )
    db.executemany("INSERT INTO edges VALUES (?,?,?)", ((wf.id, p, c) for p, c in edges))
    if notify:
        db.execute("INSERT INTO notify VALUES (?,?)", (wf.id, _to_json(list(notify))))
    db.execute(
        "INSERT INTO events (workflow_id, at, new, reason) VALUES (?,?,?,?)",
        (wf.id, wf.created_at, wf.state, "submitted"),
    )


def _delete_workflow(db: sqlite3.Connection, workflow_id: str) -> None:
    if db.execute("DELETE FROM workflows WHERE id=?", (workflow_id,)).rowcount == 0:
        raise NotFound(f"no workflow '{workflow_id}'")


def _write_growth(db: sqlite3.Connection, growth: Growth) -> None:
    db.executemany(
        "INSERT INTO jobs (workflow_id, name, seq, state, host, spec) VALUES (?,?,?,?,?,?)",
        (
            (wf, name, seq, JobState.WAITING, host, _to_json(spec))
            for wf, seq, (name, host, spec) in growth.jobs
        ),
    )
    db.executemany("INSERT INTO edges VALUES (?,?,?)", growth.edges)
    db.executemany(
        "INSERT OR REPLACE INTO outputs VALUES (?,?,?,?)",
        ((wf, job, attempt, _to_json(data)) for wf, job, attempt, data in growth.outputs),
    )


def _write_batch(db: sqlite3.Connection, batch: Batch) -> None:
    if batch.growth:
        _write_growth(db, batch.growth)
    if batch.transitions:
        # An attempt starts (attempts set): new start time, progress cleared.
        db.executemany(
            "UPDATE jobs SET state=?, reason=?, exit_code=?, signal=?,"
            " attempts=COALESCE(?, attempts),"
            " started_at=CASE WHEN ? IS NOT NULL THEN ? ELSE started_at END,"
            " ended_at=?,"
            " progress=CASE WHEN ? IS NOT NULL THEN NULL ELSE progress END"
            " WHERE workflow_id=? AND name=?",
            (
                (
                    t.new,
                    t.reason,
                    t.exit_code,
                    t.signal,
                    t.attempts,
                    t.attempts,
                    t.at,
                    t.at if t.new in TERMINAL else None,
                    t.attempts,
                    t.workflow_id,
                    t.job,
                )
                for t in batch.transitions
            ),
        )
    if batch.attempts:
        db.executemany(
            "INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                (
                    a.workflow_id,
                    a.job,
                    a.attempt,
                    a.host,
                    a.run_dir,
                    a.started_at,
                    a.pid,
                    a.ended_at,
                    a.exit_code,
                    a.signal,
                    a.reason,
                    a.log_offset,
                )
                for a in batch.attempts
            ),
        )
    if batch.notes:
        db.executemany(
            "UPDATE jobs SET reason=? WHERE workflow_id=? AND name=?",
            ((n.reason, n.workflow_id, n.job) for n in batch.notes),
        )
    if batch.progress:
        db.executemany(
            "UPDATE jobs SET progress=COALESCE(?, progress), message=COALESCE(?, message)"
            " WHERE workflow_id=? AND name=?",
            ((p.percent, p.message, p.workflow_id, p.job) for p in batch.progress),
        )
        db.executemany(
            "UPDATE attempts SET log_offset=? WHERE workflow_id=? AND job=? AND attempt=?",
            ((p.log_offset, p.workflow_id, p.job, p.attempt) for p in batch.progress),
        )
    if batch.workflows:
        db.executemany(
            "UPDATE workflows SET state=?, updated_at=? WHERE id=?",
            ((w.new, w.at, w.workflow_id) for w in batch.workflows),
        )
    if batch.usage:
        db.executemany(_UPSERT_USAGE, (_usage_row(u) for u in batch.usage))
    # Every change above is also one row of history, all inserted at once.
    db.executemany(
        "INSERT INTO events (workflow_id, job, at, old, new, reason) VALUES (?,?,?,?,?,?)",
        _event_rows(batch),
    )


def _event_rows(batch: Batch) -> Iterator[tuple[Any, ...]]:
    """The events table's rows for a batch, in the order the changes were made per kind."""
    for t in batch.transitions:
        yield (t.workflow_id, t.job, t.at, t.old, t.new, t.reason)
    for n in batch.notes:
        yield (n.workflow_id, n.job, n.at, n.state, n.state, n.reason)
    for w in batch.workflows:
        yield (w.workflow_id, None, w.at, w.old, w.new, w.reason)


# A later record of an attempt's use fills in, and corrects, what an earlier one knew.
_UPSERT_USAGE = "INSERT INTO usage VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET" + ",".join(
    f" {c}=COALESCE(excluded.{c}, usage.{c})"
    for c in ("wall_s", "cpu_s", "max_rss_bytes", "req_cpus", "req_mem_bytes", "req_time_s")
)


def _usage_row(u: UsageRecord) -> tuple[Any, ...]:
    req = u.request or Request()
    use = u.usage
    return (
        u.workflow_id,
        u.job,
        u.attempt,
        use.wall_s,
        use.cpu_s,
        use.max_rss_bytes,
        req.cpus,
        req.mem_bytes,
        req.time_s,
    )


def _usage_record(row: Sequence[Any]) -> UsageRecord:
    wid, job, attempt, wall_s, cpu_s, rss, cpus, mem, time_s = row
    request = Request(cpus, mem, time_s)
    return UsageRecord(wid, job, attempt, Usage(wall_s, cpu_s, rss), request or None)


def workflow_record(row: Sequence[Any]) -> WorkflowRecord:
    wid, name, source, base_dir, state, fail_fast, request_id, created, updated = row
    return WorkflowRecord(
        wid,
        name,
        source,
        base_dir,
        WorkflowState(state),
        bool(fail_fast),
        request_id,
        created,
        updated,
    )


# Compact, and without the check for cycles that a job's spec (plain data) cannot have:
# 30% faster than json.dumps, which a big submit calls once per job.
_to_json = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode


def _job(row: Sequence[Any]) -> JobRecord:
    wid, name, _seq, state, host, spec, *rest = row
    return JobRecord(wid, name, JobState(state), host, json.loads(spec), *rest)
