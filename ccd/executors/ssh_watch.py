"""Watching the attempts of an ssh host: many jobs, one remote command per round.

`Poller` is the one status reader of a host: each round one command reads every watched
attempt's status file, its wrapper's liveness and its log size, paced by a `Pacer` (short
after a change, stretching while nothing changes). It does not know about SSH: it is given
the coroutine that runs the remote side. (Launches are batched by `batching.Batcher`.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from ccd.errors import ExecutorError
from ccd.executors.base import StatusRecord, parse_status
from ccd.executors.batching import Pacer
from ccd.executors.ssh_remote import PollItem, PollResult

log = structlog.get_logger("ccd.executors.ssh")


class Disconnected(ExecutorError):
    """The connection to a host dropped under a command (retry once it is back)."""


@dataclass(eq=False, slots=True)
class Watch:
    """One attempt watched by the poller; ``done`` resolves to its final status record (one
    without an exit record if its wrapper vanished)."""

    rel: str
    pid: int | None
    done: asyncio.Future[StatusRecord]
    text: str | None = None
    log_size: int | None = None


class Poller:
    """The status reader of one host. ``poll(items)`` runs one remote round (and waits out a
    lost connection itself)."""

    def __init__(
        self,
        poll: Callable[[list[PollItem]], Awaitable[PollResult]],
        *,
        min_interval_s: float = 0.05,
        max_interval_s: float = 2.0,
    ) -> None:
        self._poll = poll
        self._watches: dict[str, Watch] = {}
        self._pace = Pacer(min_interval_s, max_interval_s, growth=1.5)
        self._task: asyncio.Task[None] | None = None

    def get(self, rel: str) -> Watch | None:
        return self._watches.get(rel)

    def watch(self, rel: str, pid: int | None) -> Watch:
        """Watch the attempt in ``rel`` (shared if already watched); polls again soon."""
        watch = self._watches.get(rel)
        if watch is None:
            done = asyncio.get_running_loop().create_future()
            watch = self._watches[rel] = Watch(rel, pid, done)
        elif watch.pid is None:
            watch.pid = pid
        self._pace.hurry()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        return watch

    def forget(self, watch: Watch) -> None:
        if self._watches.get(watch.rel) is watch:
            del self._watches[watch.rel]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for watch in self._watches.values():
            watch.done.cancel()
        self._watches.clear()

    async def _loop(self) -> None:
        pace = self._pace
        pace.start_round()  # the first round after min_s: attempts started together join it
        while self._watches:
            await pace.wait()
            pace.start_round()
            pace.end_round(changed=await self._round())

    async def _round(self) -> bool:
        watches = list(self._watches.values())
        items = [PollItem(w.rel, w.pid) for w in watches]
        try:
            result = await self._poll(items)
        except Exception:  # a bad round must not end the watching; the next one retries
            log.exception("ssh_poll_failed")
            return False
        changed = False
        for watch, item in zip(watches, items, strict=True):
            changed |= self._apply(watch, item.pid, result)
        return changed

    def _apply(self, watch: Watch, checked_pid: int | None, result: PollResult) -> bool:
        text = result.status.get(watch.rel)
        size = result.log_size.get(watch.rel)
        changed = text != watch.text or size != watch.log_size
        watch.text, watch.log_size = text, size
        record = parse_status(text or "")
        if record.pid is not None:
            watch.pid = record.pid
        if record.exit_code is not None or (record.claimed and record.pid is None):
            self._resolve(watch, record)
        elif checked_pid is not None and _gone(checked_pid, record, result):
            log.warning("ssh_job_lost", run_dir=watch.rel, pid=checked_pid)
            self._resolve(watch, record)
        return changed

    def _resolve(self, watch: Watch, record: StatusRecord) -> None:
        self.forget(watch)
        if not watch.done.done():
            watch.done.set_result(record)


def _gone(pid: int, record: StatusRecord, result: PollResult) -> bool:
    """Whether the wrapper ``pid`` was seen dead (before its status was read: so it died
    without writing an exit record). Unknown (no /proc on the host) is not dead."""
    if result.alive is None:
        return False
    if pid not in result.alive:
        return True
    ticks = result.alive[pid]
    expected = record.start_ticks if record.pid == pid else None
    return expected is not None and ticks is not None and ticks != expected
