"""The store's reads for live views (event streams and the dashboard): plain functions of a
sqlite3 connection, run on the store's own thread by `Store.read`, so that the queries of one
call see one state of the database (no commit lands between them).

Jobs are read without their specs: a page of a 10,000-job workflow needs states, not the
JSON that runs them (decoding that costs more than the whole query).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ccd.engine.store import EventRecord, WorkflowRecord, workflow_record
from ccd.errors import NotFound

_JOB_COLUMNS = (
    "name, state, host, attempts, exit_code, signal, reason, progress, message, started_at,"
    " ended_at"
)
_IN_CHUNK = 500  # ids per IN (...) list: SQLite allows 32,766 variables, this is plenty


class JobRow(NamedTuple):
    name: str
    state: str
    host: str
    attempts: int
    exit_code: int | None
    signal: int | None
    reason: str | None
    progress: int | None
    message: str | None
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A workflow as of one event id: a view drawn from it and then fed the events after
    that id is exactly up to date."""

    last_event_id: int
    workflow: WorkflowRecord
    jobs: list[JobRow]  # in file order
    edges: list[tuple[str, str]]  # in a stable order: it keys the picture's layout


def last_event_id(db: sqlite3.Connection) -> int:
    """The highest event id ever given (AUTOINCREMENT's, kept even if its row is deleted)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
    return int(row[0]) if row else 0


def _workflow(db: sqlite3.Connection, workflow_id: str) -> WorkflowRecord:
    row = db.execute("SELECT * FROM workflows WHERE id=?", (workflow_id,)).fetchone()
    if row is None:
        raise NotFound(f"no workflow '{workflow_id}'")
    return workflow_record(row)


def cursor(db: sqlite3.Connection, workflow_id: str | None) -> tuple[int, str | None]:
    """The last event id, and the workflow's state at it (None without a workflow)."""
    state = None if workflow_id is None else _workflow(db, workflow_id).state.value
    return last_event_id(db), state


def snapshot(db: sqlite3.Connection, workflow_id: str) -> Snapshot:
    at = last_event_id(db)
    workflow = _workflow(db, workflow_id)
    jobs = db.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE workflow_id=? ORDER BY seq", (workflow_id,)
    ).fetchall()
    edges = db.execute(
        "SELECT parent, child FROM edges WHERE workflow_id=? ORDER BY parent, child",
        (workflow_id,),
    ).fetchall()
    return Snapshot(at, workflow, [JobRow(*row) for row in jobs], [(p, c) for p, c in edges])


def events_after(
    db: sqlite3.Connection, workflow_id: str | None, after: int, limit: int, job: str | None
) -> list[tuple[EventRecord, JobRow | None]]:
    """Events after id ``after``, oldest first, each with its job's row as it is now."""
    where, params = ["e.id > ?"], [after]
    if workflow_id is not None:
        where.append("e.workflow_id = ?")
        params.append(workflow_id)  # type: ignore[arg-type]
    if job is not None:
        where.append("e.job = ?")
        params.append(job)  # type: ignore[arg-type]
    rows = db.execute(
        f"SELECT e.*, {', '.join('j.' + c.strip() for c in _JOB_COLUMNS.split(','))}"
        " FROM events e LEFT JOIN jobs j ON j.workflow_id = e.workflow_id AND j.name = e.job"
        f" WHERE {' AND '.join(where)} ORDER BY e.id LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [
        (EventRecord(*row[:7]), JobRow(*row[7:]) if row[7] is not None else None) for row in rows
    ]


def job_rows(
    db: sqlite3.Connection, workflow_id: str, names: Sequence[str] | None, running: bool
) -> list[JobRow]:
    """The named jobs (all if None; only running ones if ``running``), in file order."""
    sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE workflow_id=?"
    if running:
        sql += " AND state='running'"
    if names is None:
        return [JobRow(*r) for r in db.execute(sql + " ORDER BY seq", (workflow_id,))]
    found: list[JobRow] = []
    for start in range(0, len(names), _IN_CHUNK):
        chunk = list(names[start : start + _IN_CHUNK])
        marks = ",".join("?" * len(chunk))
        rows = db.execute(f"{sql} AND name IN ({marks}) ORDER BY seq", [workflow_id, *chunk])
        found.extend(JobRow(*r) for r in rows)
    return found


def workflows_page(
    db: sqlite3.Connection, offset: int, limit: int
) -> tuple[int, list[WorkflowRecord]]:
    """How many workflows there are, and one page of them, newest first."""
    total = db.execute("SELECT count(*) FROM workflows").fetchone()[0]
    rows = db.execute(
        "SELECT * FROM workflows ORDER BY created_at DESC, id LIMIT ? OFFSET ?", (limit, offset)
    ).fetchall()
    return int(total), [workflow_record(row) for row in rows]


def workflows_by_id(db: sqlite3.Connection, ids: Sequence[str]) -> list[WorkflowRecord]:
    """The workflows of ``ids`` that exist, newest first."""
    found: list[WorkflowRecord] = []
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[start : start + _IN_CHUNK])
        marks = ",".join("?" * len(chunk))
        rows = db.execute(f"SELECT * FROM workflows WHERE id IN ({marks})", chunk)
        found.extend(workflow_record(row) for row in rows)
    return sorted(found, key=lambda w: (-w.created_at, w.id))


def state_counts(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Each workflow's number of jobs per state."""
    counts: dict[str, dict[str, int]] = {wid: {} for wid in ids}
    for wid in ids:  # one indexed range per workflow: no scan of other workflows' jobs
        for state, n in db.execute(
            "SELECT state, count(*) FROM jobs WHERE workflow_id=? GROUP BY state", (wid,)
        ):
            counts[wid][state] = n
    return counts


def workflows_touched(db: sqlite3.Connection, after: int) -> tuple[list[str], int]:
    """The workflows with events after id ``after``, and the last event id."""
    rows = db.execute(
        "SELECT workflow_id, max(id) FROM events WHERE id > ? GROUP BY workflow_id", (after,)
    ).fetchall()
    return [str(wid) for wid, _ in rows], max((int(top) for _, top in rows), default=after)
