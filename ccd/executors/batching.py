"""Few commands for many jobs, within a host's budget: the toolkit the ssh and Slurm backends
share (neither knows about the other, and nothing here knows about either).

- `Batcher` gathers requests made in the same moment (and while the previous batch is in
  flight) into one call: the ssh backend's launches, the Slurm backend's lookups by name.
- `Budget` caps a host's commands: at most so many at once, and a `TokenBucket` rate.
- `Pacer` paces a poll loop: short after a change, stretching while nothing changes, and
  brought forward by `hurry()` (a submission, a cancel).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

import structlog

from ccd.errors import ExecutorError

log = structlog.get_logger("ccd.executors")

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs ``run(items)`` for batches of submitted items, at most ``max_inflight`` at once;
    ``run`` returns one result per item, in order. A batch starts after the turn of the
    event loop in which its first item came, or ``window_s`` later, so that what arrives
    together goes together."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R]]],
        *,
        name: str,
        max_batch: int,
        max_inflight: int,
        window_s: float = 0.0,
    ) -> None:
        self._run = run
        self._name = name
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._window_s = window_s
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if not self._scheduled:
            # After the current turn (or the window), so that every submission made
            # meanwhile joins the batch.
            self._scheduled = True
            if self._window_s > 0:
                loop.call_later(self._window_s, self._dispatch)
            else:
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
        except BaseException as exc:  # the waiters must hear of it, even of a cancel
            error = exc if isinstance(exc, Exception) else ExecutorError(f"{self._name}: {exc!r}")
            for _, future in live:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("batch_crashed", batcher=self._name, exc_info=error)
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


class Budget:
    """At most ``concurrency`` commands at once, and ``rate_per_s`` on average (bursts up
    to ``burst``): every command a backend runs on one host passes through its budget."""

    def __init__(self, rate_per_s: float, concurrency: int, burst: float | None = None) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(rate_per_s, burst)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            await self._bucket.take()
            yield


class Pacer:
    """When the next round of a poll loop is due: ``min_s`` after a round that saw a
    change, else the previous interval times ``growth``, up to ``max_s``; counted from the
    start of the previous round. `hurry()` makes the next round due ``min_s`` after that
    start (at once if that has passed), waking `wait()`."""

    def __init__(self, min_s: float, max_s: float, *, growth: float) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.interval_s = min_s
        self._growth = growth
        self._since = 0.0  # when the previous round started (loop time)
        self._wake = asyncio.Event()

    def start_round(self) -> None:
        self._since = asyncio.get_running_loop().time()

    def end_round(self, *, changed: bool) -> None:
        grown = min(self.interval_s * self._growth, self.max_s)
        self.interval_s = self.min_s if changed else grown

    def hurry(self) -> None:
        self.interval_s = self.min_s
        self._wake.set()

    async def wait(self) -> None:
        """Return when the next round is due."""
        loop = asyncio.get_running_loop()
        while (delay := self._since + self.interval_s - loop.time()) > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
