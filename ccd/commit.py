"""Group commit: every change made in one turn of the event loop goes into one transaction,
and the actions those changes imply (start a process, wake a waiter) run only after it has
committed. This is how "state is written before it is acted on" stays cheap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from ccd.store import Batch, Store

log = structlog.get_logger("ccd.commit")


class Committer:
    def __init__(self, store: Store, after_each_commit: Callable[[], None]) -> None:
        self._store = store
        self._after_each_commit = after_each_commit
        self.batch = Batch()
        self._actions: list[Callable[[], None]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.settled = asyncio.Event()  # set while nothing waits to be committed
        self.settled.set()

    @property
    def busy(self) -> bool:
        return bool(self.batch or self._actions or self._flushing)

    def after(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the changes queued so far are committed."""
        self._actions.append(action)

    def schedule(self) -> None:
        """Make sure a commit of what is queued is under way (one at a time)."""
        if self._flushing is None and (self.batch or self._actions):
            self.settled.clear()
            self._flushing = asyncio.create_task(self._flush())

    async def drain(self) -> None:
        """Commit everything queued, now."""
        if self._flushing is not None:
            await self._flushing
        await self._commit_once()

    async def _flush(self) -> None:
        try:
            while self.batch or self._actions:
                await self._commit_once()
        except Exception:
            log.exception("commit_failed")
            raise
        finally:
            self._flushing = None
            if not (self.batch or self._actions):
                self.settled.set()

    async def _commit_once(self) -> None:
        batch, actions = self.batch, self._actions
        self.batch, self._actions = Batch(), []
        await asyncio.shield(self._store.apply(batch))
        for action in actions:
            action()
        self._after_each_commit()
