"""Group commit: every change made in one turn of the event loop goes into one transaction,
and the actions those changes imply (start a process, wake a waiter) run only after it has
committed. This is how "state is written before it is acted on" stays cheap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from ccd.engine.store import Batch, Store

log = structlog.get_logger("ccd.commit")

# A failed commit is retried after this long, doubling up to the maximum.
RETRY_MIN_S = 0.1
RETRY_MAX_S = 30.0


class Committer:
    def __init__(self, store: Store, after_each_commit: Callable[[], None]) -> None:
        self._store = store
        self._after_each_commit = after_each_commit
        self.batch = Batch()
        self._actions: list[Callable[[], None]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._backing_off = False  # the flush waits to retry a failed commit
        self.settled = asyncio.Event()  # set while nothing waits to be committed
        self.settled.set()

    def after(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the changes queued so far are committed."""
        self._actions.append(action)

    def schedule(self) -> None:
        """Make sure a commit of what is queued is under way (one at a time)."""
        if self._flushing is None and (self.batch or self._actions):
            self.settled.clear()
            self._flushing = asyncio.create_task(self._flush())

    async def drain(self) -> None:
        """Commit everything queued, now: once, raising if that fails (this is for closing,
        which must not wait on retries)."""
        if self._flushing is not None:
            if self._backing_off:
                self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
        await self._commit_once()

    async def _flush(self) -> None:
        delay_s = RETRY_MIN_S
        try:
            while self.batch or self._actions:
                try:
                    await self._commit_once()
                except Exception:
                    # Nothing is acted on before it is committed, so nothing moves meanwhile;
                    # a full disk or a locked database may well clear up.
                    log.exception("commit_failed", retry_in_s=delay_s)
                    self._backing_off = True
                    try:
                        await asyncio.sleep(delay_s)
                    finally:
                        self._backing_off = False
                    delay_s = min(delay_s * 2, RETRY_MAX_S)
                else:
                    delay_s = RETRY_MIN_S
        finally:
            self._flushing = None
            if not (self.batch or self._actions):
                self.settled.set()

    async def _commit_once(self) -> None:
        batch, actions = self.batch, self._actions
        self.batch, self._actions = Batch(), []
        try:
            await asyncio.shield(self._store.apply(batch))
        except Exception:
            # Not committed (the transaction rolled back): kept, ahead of what came since.
            batch.extend(self.batch)
            self.batch, self._actions = batch, actions + self._actions
            raise
        for action in actions:
            action()
        self._after_each_commit()
