"""Running one attempt of a job on its executor: start or re-attach, time out, kill, and read
progress from its log as it grows.

The scheduler decides *what* runs; this module sees an attempt through to its `ExitStatus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import structlog

from ccd.engine.progress import LogTail
from ccd.engine.results import ResultError, Results, collect
from ccd.errors import ExecutorError
from ccd.executors.base import Executor, Handle, Launch
from ccd.models import ExitStatus, Progress

log = structlog.get_logger("ccd.attempts")

REATTACH_RETRY_MIN_S = 1.0
REATTACH_RETRY_MAX_S = 60.0
FINAL_LOG_READS_MAX = 64


@dataclass(eq=False, slots=True)
class Attempt:
    """One attempt in flight. ``kill`` is resolved to ask it to die (see `request_kill`)."""

    launch: Launch
    host: str
    timeout_s: float | None
    on_progress: Callable[[Progress, int], None]  # (marker, log offset to resume from)
    tail: LogTail = field(default_factory=LogTail)
    started_at: float = field(default_factory=time.time)
    handle: Handle | None = None
    kill_reason: str | None = None
    kill: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # In a batch system's queue: its timeout counts from when it starts running, not before.
    queued: bool = False
    on_running: Callable[[], None] | None = None
    results: Results | None = None  # what it handed on, read once it has succeeded

    def request_kill(self, reason: str) -> None:
        if self.kill_reason is None:
            self.kill_reason = reason
        if not self.kill.done():
            self.kill.set_result(None)

    def mark_running(self) -> None:
        """The batch system started it."""
        self.queued = False
        if self.on_running is not None:
            self.on_running()


class AttemptRunner:
    """Sees attempts through on their executors; one progress reader for all of them."""

    def __init__(
        self,
        executors: Mapping[str, Executor],
        *,
        kill_grace_s: float,
        progress_interval_s: float,
    ) -> None:
        self._executors = executors
        self._kill_grace_s = kill_grace_s
        self._progress_interval_s = progress_interval_s
        self._live: set[Attempt] = set()
        self._progress_task: asyncio.Task[None] | None = None

    def set_pacing(self, kill_grace_s: float, progress_interval_s: float) -> None:
        self._kill_grace_s = kill_grace_s
        self._progress_interval_s = progress_interval_s

    async def run(self, attempt: Attempt) -> ExitStatus:
        """Start the attempt and wait for its end; a job that cannot start is a failure."""
        executor = self._executors[attempt.host]
        try:
            attempt.handle = await executor.start(attempt.launch)
        except Exception as exc:  # a job that cannot start is a failed job, not a crash
            log.warning("attempt_start_failed", job=attempt.launch.job, error=str(exc))
            return ExitStatus(None, reason=f"could not start: {exc}")
        return await self._follow(attempt, executor, attempt.timeout_s)

    async def resume(self, attempt: Attempt) -> ExitStatus | None:
        """Re-attach to an attempt an earlier daemon started; None if it never started
        (it then never will: the executor has made sure)."""
        executor = self._executors[attempt.host]
        attempt.handle = await self._reattach(executor, attempt)
        if attempt.handle is None:
            return None
        timeout_s = attempt.timeout_s
        if timeout_s is not None and not attempt.queued:  # (started_at: when it was submitted)
            timeout_s = max(0.0, timeout_s - (time.time() - attempt.started_at))
        return await self._follow(attempt, executor, timeout_s)

    async def _reattach(self, executor: Executor, attempt: Attempt) -> Handle | None:
        """The executor's reattach, retried while its host cannot be reached: the job may
        well be running there, so giving up would lose it (or run it twice)."""
        delay_s = REATTACH_RETRY_MIN_S
        while True:
            try:
                return await executor.reattach(attempt.launch)
            except (ExecutorError, OSError, TimeoutError) as exc:
                log.warning(
                    "reattach_retry", job=attempt.launch.job, error=str(exc), retry_in_s=delay_s
                )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, REATTACH_RETRY_MAX_S)

    async def close(self) -> None:
        if self._progress_task is not None:
            self._progress_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._progress_task

    async def _follow(
        self, attempt: Attempt, executor: Executor, timeout_s: float | None
    ) -> ExitStatus:
        assert attempt.handle is not None
        self._live.add(attempt)
        self._ensure_progress_reader()
        try:
            status = await self._supervise(attempt, executor, attempt.handle, timeout_s)
        finally:
            self._live.discard(attempt)
        try:
            # To the end of the log, which may take more than one read: its last marker is
            # the progress the job ended with. Bounded: something the job left behind may
            # still be writing to it.
            for _ in range(FINAL_LOG_READS_MAX):
                if not await self._read_progress(attempt, executor, attempt.handle):
                    break
        except OSError as exc:  # the job may have removed its log: its end still counts
            log.warning("progress_read_failed", job=attempt.launch.job, error=str(exc))
        if attempt.kill_reason is not None:  # we killed it: that is the reason, not "lost"
            status = replace(status, reason=attempt.kill_reason)
        elif status.ok:
            status = await _collect(attempt, executor, attempt.handle, status)
        return status

    async def _supervise(
        self, attempt: Attempt, executor: Executor, handle: Handle, timeout_s: float | None
    ) -> ExitStatus:
        """Wait for the end; on timeout or a kill request, SIGTERM the process group and
        SIGKILL it if it outlives the grace period. The wait itself is awaited directly (no
        task of its own): most attempts just end, and this runs once per attempt."""
        killer: asyncio.Task[None] | None = None

        def kill(reason: str) -> None:
            nonlocal killer
            if killer is None:
                if attempt.kill_reason is None:
                    attempt.kill_reason = reason
                killer = asyncio.create_task(self._terminate(attempt, executor, handle))

        def on_kill_request(_: asyncio.Future[None]) -> None:
            kill("cancelled")  # request_kill has set the real reason already

        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def start_clock() -> None:
            nonlocal timer
            if timeout_s is not None and timer is None:
                timer = loop.call_later(timeout_s, kill, "timeout")

        if attempt.queued:
            attempt.on_running = start_clock
        else:
            start_clock()
        attempt.kill.add_done_callback(on_kill_request)
        try:
            return await executor.wait(handle)
        finally:
            attempt.on_running = None
            if timer is not None:
                timer.cancel()
            attempt.kill.remove_done_callback(on_kill_request)
            if killer is not None:
                killer.cancel()  # it ended: no SIGKILL after the grace period

    async def _terminate(self, attempt: Attempt, executor: Executor, handle: Handle) -> None:
        log.info("attempt_kill", job=attempt.launch.job, why=attempt.kill_reason)
        await _send_signal(executor, handle, signal.SIGTERM)
        await asyncio.sleep(self._kill_grace_s)
        await _send_signal(executor, handle, signal.SIGKILL)

    def _ensure_progress_reader(self) -> None:
        if self._progress_task is None or self._progress_task.done():
            self._progress_task = asyncio.create_task(self._progress_loop())

    async def _progress_loop(self) -> None:
        """Read live attempts' new log bytes now and then; ends when none is left."""
        while self._live:
            await asyncio.sleep(self._progress_interval_s)
            for attempt in list(self._live):
                assert attempt.handle is not None
                executor = self._executors[attempt.host]
                try:
                    await self._read_progress(attempt, executor, attempt.handle)
                except OSError as exc:  # a vanished run dir must not stop the others
                    log.warning("progress_read_failed", job=attempt.launch.job, error=str(exc))

    @staticmethod
    async def _read_progress(attempt: Attempt, executor: Executor, handle: Handle) -> int:
        """Read what the log has gained (up to the executor's chunk size); how many bytes."""
        data = await executor.read_log(handle, attempt.tail.offset)
        if data:
            marker = attempt.tail.feed(data)
            if marker is not None:
                attempt.on_progress(marker, attempt.tail.resume_offset)
        return len(data)


async def _send_signal(executor: Executor, handle: Handle, signum: int) -> None:
    """A signal that cannot be sent (its host is unreachable, say) is logged, and the wait
    for the attempt's end goes on: it may end anyway, or be reached again later."""
    try:
        await executor.signal(handle, signum)
    except (ExecutorError, OSError) as exc:
        log.warning("attempt_signal_failed", job=handle.job, signal=signum, error=str(exc))


async def _collect(
    attempt: Attempt, executor: Executor, handle: Handle, status: ExitStatus
) -> ExitStatus:
    """A succeeded attempt's outputs and new jobs, read from its run dir; a file that
    breaks the rules (or cannot be read) makes it a failure, with the reason."""
    try:
        attempt.results = await collect(lambda name, limit: executor.read_file(handle, name, limit))
    except ResultError as err:
        return replace(status, reason=str(err))
    except (ExecutorError, OSError) as err:
        return replace(status, reason=f"results not read: {err}")
    return status
