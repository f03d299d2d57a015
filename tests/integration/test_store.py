"""The store on real SQLite: schema, batches in one transaction, idempotency, migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import pytest

from ccd.engine.store import (
    SCHEMA_VERSION,
    AttemptRecord,
    Batch,
    NewJob,
    ProgressUpdate,
    Store,
    Transition,
    WorkflowChange,
    WorkflowRecord,
)
from ccd.errors import NotFound, StoreError
from ccd.models import JobState, WorkflowState


def _wf(wid: str = "w1", request_id: str | None = None) -> WorkflowRecord:
    return WorkflowRecord(
        wid, "demo", "/x/wf.yaml", "/x", WorkflowState.RUNNING, False, request_id, 1.0, 1.0
    )


async def _store_with_workflow(tmp_path: Path) -> Store:
    store = await Store.open(tmp_path / "ccd.db")
    jobs = [NewJob(n, "local", {"k": n}) for n in ("a", "b")]
    await store.put_workflow(_wf(request_id="req-1"), jobs, [("a", "b")])
    return store


async def test_fresh_database_has_current_schema_and_wal(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "ccd.db")
    await store.close()
    async with aiosqlite.connect(tmp_path / "ccd.db") as conn:
        async with conn.execute("PRAGMA user_version") as cur:
            assert (await cur.fetchone()) == (SCHEMA_VERSION,)
        async with conn.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone()) == ("wal",)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "ccd.db") as conn:
        await conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        await conn.commit()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(tmp_path / "ccd.db")


async def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    store = await _store_with_workflow(tmp_path)
    await store.close()
    store = await Store.open(tmp_path / "ccd.db")
    try:
        assert [j.name for j in await store.list_jobs("w1")] == ["a", "b"]
        assert await store.list_edges("w1") == [("a", "b")]
        assert await store.find_request("req-1") == "w1"
        assert await store.find_request("other") is None
    finally:
        await store.close()


async def test_batch_applies_transitions_attempts_progress_and_events(tmp_path: Path) -> None:
    store = await _store_with_workflow(tmp_path)
    try:
        batch = Batch()
        batch.transitions += [
            Transition("w1", "a", JobState.WAITING, JobState.READY, 2.0),
            Transition("w1", "a", JobState.READY, JobState.RUNNING, 3.0, attempts=1),
        ]
        batch.attempts.append(AttemptRecord("w1", "a", 1, "local", "/r/a/1", 3.0, pid=42))
        batch.progress.append(ProgressUpdate("w1", "a", 1, 40, "loading", 128))
        await store.apply(batch)
        done = Batch(
            transitions=[
                Transition("w1", "a", JobState.RUNNING, JobState.SUCCEEDED, 4.0, exit_code=0)
            ],
            workflows=[WorkflowChange("w1", WorkflowState.RUNNING, WorkflowState.FAILED, 4.0)],
        )
        await store.apply(done)
        job = {j.name: j for j in await store.list_jobs("w1")}["a"]
        assert (job.state, job.attempts, job.exit_code) == (JobState.SUCCEEDED, 1, 0)
        assert (job.progress, job.message) == (40, "loading")
        assert (job.started_at, job.ended_at) == (3.0, 4.0)
        [attempt] = await store.list_attempts("w1", "a")
        assert (attempt.pid, attempt.log_offset) == (42, 128)
        events = [(e.job, e.old, e.new) for e in await store.list_events("w1")]
        assert events == [
            (None, None, "running"),
            ("a", "waiting", "ready"),
            ("a", "ready", "running"),
            ("a", "running", "succeeded"),
            (None, "running", "failed"),
        ]
        assert (await store.get_workflow("w1")).state is WorkflowState.FAILED
    finally:
        await store.close()


async def test_failed_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    store = await _store_with_workflow(tmp_path)
    try:
        bad = Batch(
            transitions=[Transition("w1", "a", JobState.WAITING, JobState.READY, 2.0)],
            attempts=[
                AttemptRecord("w1", "a", 1, "local", "/r", 1.0),
                AttemptRecord("nope", "a", 1, "local", "/r", 1.0),
            ],  # foreign key fails
        )
        with pytest.raises(aiosqlite.IntegrityError):
            await store.apply(bad)
        assert {j.name: j.state for j in await store.list_jobs("w1")}["a"] is JobState.WAITING
        assert len(await store.list_events("w1")) == 1
    finally:
        await store.close()


async def test_duplicate_workflow_is_rejected_atomically(tmp_path: Path) -> None:
    store = await _store_with_workflow(tmp_path)
    try:
        with pytest.raises(aiosqlite.IntegrityError):
            await store.put_workflow(_wf("w2", request_id="req-1"), [], [])
        with pytest.raises(NotFound):
            await store.get_workflow("w2")
    finally:
        await store.close()


async def test_delete_cascades(tmp_path: Path) -> None:
    store = await _store_with_workflow(tmp_path)
    try:
        await store.delete_workflow("w1")
        assert await store.list_jobs("w1") == []
        assert await store.list_events("w1") == []
        with pytest.raises(NotFound):
            await store.delete_workflow("w1")
    finally:
        await store.close()


async def test_writes_made_at_once_each_commit_whole(tmp_path: Path) -> None:
    """Two submits and a scheduler batch at the same moment, on the one connection: each is
    its own transaction (none starts inside another's)."""
    store = await _store_with_workflow(tmp_path)
    try:
        jobs = [NewJob(f"j{i}", "local", {}) for i in range(50)]
        ready = Batch(transitions=[Transition("w1", "a", JobState.WAITING, JobState.READY, 2.0)])
        await asyncio.gather(
            store.put_workflow(_wf("w2"), jobs, [("j0", "j1")]),
            store.apply(ready),
            store.put_workflow(_wf("w3"), jobs, []),
            store.delete_workflow("w1"),
        )
        assert [len(await store.list_jobs(w)) for w in ("w1", "w2", "w3")] == [0, 50, 50]
        assert await store.list_edges("w2") == [("j0", "j1")]
    finally:
        await store.close()
