"""Group commit when a commit fails: nothing queued is dropped or acted on early, the commit is
retried, and closing does not wait on retries. A scripted store stands in for SQLite failing
(a full disk, a locked database), which a real one will not do on demand."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import cast

import pytest

from ccd.engine import commit
from ccd.engine.commit import Committer
from ccd.engine.store import Batch, Store, Transition
from ccd.models import JobState
from tests.helpers import eventually


class FailingStore:
    """Fails its first ``failures`` commits; records the batches it commits."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.committed: list[Batch] = []

    async def apply(self, batch: Batch) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        self.committed.append(batch)


def _change(job: str) -> Transition:
    return Transition("w1", job, JobState.WAITING, JobState.READY, 1.0)


async def test_failed_commit_is_retried_with_later_changes_and_acts_only_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit, "RETRY_MIN_S", 0.01)
    store = FailingStore(failures=2)
    committer = Committer(cast(Store, store), lambda: None)
    acted: list[str] = []
    committer.batch.transitions.append(_change("a"))
    committer.after(lambda: acted.append(f"a after {len(store.committed)} commits"))
    committer.schedule()
    await eventually(lambda: store.calls >= 1)
    assert acted == []  # not committed: not acted on
    committer.batch.transitions.append(_change("b"))  # made while the first commit failed
    committer.after(lambda: acted.append("b"))
    committer.schedule()
    await asyncio.wait_for(committer.settled.wait(), 10)
    assert [[t.job for t in b.transitions] for b in store.committed] == [["a", "b"]]
    assert acted == ["a after 1 commits", "b"]
    assert store.calls == 3


async def test_drain_does_not_wait_out_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "RETRY_MIN_S", 3600.0)
    store = FailingStore(failures=2)
    committer = Committer(cast(Store, store), lambda: None)
    committer.batch.transitions.append(_change("a"))
    committer.schedule()
    await eventually(lambda: store.calls >= 1)
    await asyncio.sleep(0)  # the flush is now waiting to retry
    with pytest.raises(sqlite3.OperationalError):
        await asyncio.wait_for(committer.drain(), 10)  # one more try, which fails
    await committer.drain()  # the next one commits, the change still queued
    assert [[t.job for t in b.transitions] for b in store.committed] == [["a"]]
