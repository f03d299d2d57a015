"""Helpers shared by the tests: waiting on state with a deadline (never a fixed sleep),
whether a process lives, and attempts to hand an executor. Fixtures stay in conftest.py."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccd.executors.base import Launch

POLL_FIRST_S = 0.001  # a condition that is nearly there is seen at once...
POLL_MAX_S = 0.05  # ...and one that takes long is not asked about too often


async def eventually(check: Callable[[], Any], what: str = "", *, timeout_s: float = 60.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that;
    fail after ``timeout_s``. For state kept by callbacks or other processes, where there is
    no event to await."""
    deadline = time.monotonic() + timeout_s
    interval_s = POLL_FIRST_S
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}")
        await asyncio.sleep(interval_s)
        interval_s = min(interval_s * 2, POLL_MAX_S)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    """`eventually` without an event loop: for tests that drive other processes."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie counts as gone (pid 1 here may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    # Field 2 (the command) may hold spaces and parentheses: the state follows its last ")".
    state = data[data.rfind(b")") + 2 :][:1]
    return state not in (b"Z", b"")


def inline_launch(
    root: Path,
    job: str,
    command: str,
    *,
    workflow_id: str = "wf",
    attempt: int = 1,
    script_name: str = "run.sh",
    **fields: Any,
) -> Launch:
    """An attempt of the inline command ``command`` (a workflow's ``run:``), its run
    directory ``root/WORKFLOW/JOB/ATTEMPT`` as the engine lays them out."""
    run_dir = root / workflow_id / job / str(attempt)
    return Launch(
        workflow_id=workflow_id,
        job=job,
        attempt=attempt,
        run_dir=run_dir,
        script=run_dir / script_name,
        argv=("sh", f"./{script_name}"),
        env=fields.pop("env", {}),
        inline=command,
        **fields,
    )
