"""Batching for the ssh backend: many jobs, few remote commands.

`Batcher` gathers requests made in the same moment (and while the previous batch is in
flight) into one call; the ssh executor starts a whole batch of attempts with one command.
`Poller` is the one status reader of a host: each round one command reads every watched
attempt's status file, its wrapper's liveness and its log size; the interval starts short and
stretches while nothing changes. Neither knows about SSH: they are given the coroutine that
runs the remote side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from ccd.errors import ExecutorError
from ccd.executors.base import StatusRecord, parse_status
from ccd.executors.ssh_remote import PollItem, PollResult

log = structlog.get_logger("ccd.executors.ssh")

T = TypeVar("T")
R = TypeVar("R")


class Disconnected(ExecutorError):
    """The connection to a host dropped under a command (retry once it is back)."""


class Batcher(Generic[T, R]):
    """Runs ``run(items)`` for batches of submitted items, at most ``max_inflight`` at once;
    ``run`` returns one result per item, in order."""

    def __init__(
        self, run: Callable[[list[T]], Awaitable[list[R]]], *, max_batch: int, max_inflight: int
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if not self._scheduled:
            # After the current turn, so that every submission of this turn joins the batch.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._queue and len(self._tasks) < self._max_inflight:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            task = asyncio.create_task(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        live = [(item, future) for item, future in batch if not future.cancelled()]
        try:
            results = await self._run([item for item, _ in live])
        except Exception as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("ssh_batch_crashed", exc_info=error)
        self._dispatch()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()


class TokenBucket:
    """At most ``rate_per_s`` takes per second on average, in bursts of up to ``burst``
    (default: one second's worth)."""

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        self._rate = rate_per_s
        self._capacity = max(1.0, rate_per_s if burst is None else burst)
        self._tokens = self._capacity
        self._at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)


@dataclass(eq=False, slots=True)
class Watch:
    """One attempt watched by the poller; ``done`` resolves to its final status record (one
    without an exit record if its wrapper vanished)."""

    rel: str
    pid: int | None
    done: asyncio.Future[StatusRecord]
    text: str | None = None
    log_size: int | None = None


@dataclass(slots=True)
class _Pace:
    min_s: float
    max_s: float
    interval_s: float = 0.0
    due: float = 0.0


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
        self._pace = _Pace(min_interval_s, max_interval_s, min_interval_s)
        self._wake = asyncio.Event()
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
        self._hurry()
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

    def _hurry(self) -> None:
        loop = asyncio.get_running_loop()
        self._pace.interval_s = self._pace.min_s
        due = loop.time() + self._pace.min_s
        if due < self._pace.due:
            self._pace.due = due
            self._wake.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        pace = self._pace
        pace.due = loop.time() + pace.interval_s
        while self._watches:
            while (delay := pace.due - loop.time()) > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            changed = await self._round()
            pace.interval_s = pace.min_s if changed else min(pace.interval_s * 1.5, pace.max_s)
            pace.due = loop.time() + pace.interval_s

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
