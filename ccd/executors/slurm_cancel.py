"""scancel for many jobs at once.

A workflow cancelled as a whole asks to signal each of its jobs; on a cluster that is one
``scancel`` per job, twice (SIGTERM, then SIGKILL after the grace period). Here the ids asked
for within a moment go out in one command, and an array all of whose unfinished elements are
asked for goes by its own id (``scancel 81``, not ``scancel 81_0 81_1 ...``): the workflow's
cancel becomes one scancel per array, while cancelling one job still cancels only its element.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence

from ccd.executors.slurm_arrays import array_job_id

WINDOW_S = 0.02  # cancels asked for within this long share a scancel


def targets(ids: Collection[str], live: Callable[[str], Collection[str]]) -> list[str]:
    """What to name in one scancel for ``ids``: each array whose live elements (``live(array
    id)``: those not known to have ended) are all among them, and more than one, by its own
    id; the rest as they are."""
    named_by_array: dict[str, set[str]] = {}
    for job_id in ids:
        if "_" in job_id:
            named_by_array.setdefault(array_job_id(job_id), set()).add(job_id)
    whole = {
        array
        for array, named in named_by_array.items()
        if len(named) > 1 and set(live(array)) <= named
    }
    named = [i for i in ids if "_" not in i or array_job_id(i) not in whole]
    return sorted(whole) + sorted(named)


class CancelBatcher:
    """Gathers the ids of one moment into one ``scancel`` (run by ``run(ids)``)."""

    def __init__(
        self,
        run: Callable[[Sequence[str]], Awaitable[None]],
        live: Callable[[str], Collection[str]],
    ) -> None:
        self._run = run
        self._live = live
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def cancel(self, job_id: str) -> None:
        """Return once the scancel that names ``job_id`` (or its array) has run."""
        future = self._pending.get(job_id)
        if future is None:
            future = self._pending[job_id] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="slurm-scancel")
        await asyncio.shield(future)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    async def _flush(self) -> None:
        await asyncio.sleep(WINDOW_S)
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await self._run(targets(list(batch), self._live))
            except Exception as exc:
                for future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future in batch.values():
                if not future.done():
                    future.set_result(None)
