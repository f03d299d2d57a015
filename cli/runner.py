"""`ccctl run`: the engine in this process, with a live view or plain event lines."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import click

from ccd import logs, paths
from ccd.engine import Engine, JobEvent, Limits, WorkflowRun, stored_states
from ccd.errors import CcdError, Conflict
from ccd.models import JobState
from ccd.spec import WorkflowSpec
from cli import render

REDRAW_INTERVAL_S = 0.25
HOST_CHECK_INTERVAL_S = 1.0


def run_in_process(
    spec: WorkflowSpec,
    state_dir: Path,
    *,
    fail_fast: bool = False,
    max_jobs: int | None = None,
    live: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run ``spec`` to the end; return its final status (the ``--json`` shape)."""
    return asyncio.run(_run(spec, state_dir, fail_fast, max_jobs, live, quiet))


async def _run(
    spec: WorkflowSpec,
    state_dir: Path,
    fail_fast: bool,
    max_jobs: int | None,
    live: bool,
    quiet: bool,
) -> dict[str, Any]:
    with _StopOnSignals() as stop:
        paths.prepare_state_dir(state_dir)
        logs.configure(state_dir / paths.LOG_NAME)
        engine = await Engine.open(state_dir, spec.hosts, Limits(max_jobs=max_jobs))
        try:
            if stop.asked:
                raise CcdError("interrupted before the workflow was submitted")
            wf_id = await engine.submit(spec, fail_fast=fail_fast)
            stop.cancels(engine, wf_id)
            async with _report(engine, wf_id, live, quiet), _watch_hosts(engine, spec):
                await engine.wait(wf_id)
            await engine.usage_settled()
            status = (await engine.status(wf_id)).to_json()
        finally:
            await engine.close()
    if not quiet:
        click.echo(render.summary(status))
    return status


class _StopOnSignals:
    """Ctrl-C (or SIGTERM) from the start: before the workflow is stored, it is not
    submitted; once it is, it is cancelled cleanly (process groups killed, cancellations
    recorded) and the run ends as usual. Never a workflow left "running" in the store."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.asked = False
        self._cancel: Callable[[], object] | None = None
        self._cancelling: set[asyncio.Task[None]] = set()  # owned here until they end

    def __enter__(self) -> _StopOnSignals:
        loop = asyncio.get_running_loop()
        for signum in self._SIGNALS:
            loop.add_signal_handler(signum, self._on_signal)
        return self

    def __exit__(self, *_: object) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._SIGNALS:
            loop.remove_signal_handler(signum)

    def cancels(self, engine: Engine, wf_id: str) -> None:
        """From now on a signal cancels ``wf_id`` (at once, if one came during its submit)."""
        self._cancel = lambda: self._start_cancel(engine, wf_id)
        if self.asked:
            self._start_cancel(engine, wf_id)

    def _start_cancel(self, engine: Engine, wf_id: str) -> None:
        async def cancel() -> None:
            with contextlib.suppress(Conflict):  # it finished meanwhile: nothing to stop
                await engine.cancel(wf_id)

        task = asyncio.get_running_loop().create_task(cancel())
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    def _on_signal(self) -> None:
        click.echo("\ncancelling: stopping running jobs...", err=True)
        self.asked = True
        if self._cancel is not None:
            self._cancel()


@contextlib.asynccontextmanager
async def _report(engine: Engine, wf_id: str, live: bool, quiet: bool) -> AsyncIterator[None]:
    """While the run lasts: redraw a live view on a terminal, else print event lines."""
    if quiet:
        yield
        return
    if not live:

        def print_event(ev: JobEvent) -> None:
            if ev.progress is None:  # progress ticks would flood a log file
                click.echo(render.event_line(ev.workflow_id, ev.job, ev.state, ev.reason, ev.at))

        unsubscribe = engine.subscribe(print_event)
        try:
            yield
        finally:
            unsubscribe()
        return
    view = render.LiveView(sys.stdout)
    run = engine.live_run(wf_id)
    if run is None:  # already over: the summary says it all
        yield
        return

    async def redraw() -> None:
        while True:
            view.draw(live_status(run))
            await asyncio.sleep(REDRAW_INTERVAL_S)

    task = asyncio.create_task(redraw())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        view.draw(live_status(run))


@contextlib.asynccontextmanager
async def _watch_hosts(engine: Engine, spec: WorkflowSpec) -> AsyncIterator[None]:
    """Say on stderr when a host the jobs need cannot be reached (and when it is back): its
    jobs wait for it, which without a word would look like a hang."""
    hosts = sorted({job.host for job in spec.jobs.values()} - {"local"})

    async def watch() -> None:
        said: dict[str, str] = {name: "ok" for name in hosts}
        while True:
            for name in hosts:
                health = engine.host_health(name)
                if health.state != said[name] and health.state != "connecting":
                    said[name] = health.state
                    news = f"host {name}: {health.state}"
                    if health.state != "ok":
                        news += f" ({health.reason}); its jobs wait for it (Ctrl-C stops the run)"
                    click.echo(render.one_line(news), err=True)
            await asyncio.sleep(HOST_CHECK_INTERVAL_S)

    task = asyncio.create_task(watch()) if hosts else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def live_status(run: WorkflowRun) -> dict[str, Any]:
    """The status shape built from the scheduler's memory (no database read per frame)."""
    return {
        "workflow": {"id": run.id, "name": run.name, "state": run.state.value},
        "jobs": [
            {"name": j.name, "state": j.state.value, "progress": j.progress}
            for j in run.jobs.values()
        ],
    }


def latest_states(
    spec: WorkflowSpec, state_dir: Path
) -> tuple[dict[str, JobState], dict[str, int]]:
    """Job states and progress of the newest run of this workflow file, if there is one."""
    db = state_dir / paths.DB_NAME
    if not db.exists():
        return {}, {}
    return asyncio.run(stored_states(db, spec.source))


def show_dry_run(spec: WorkflowSpec, state_dir: Path, *, as_json: bool = False) -> None:
    """Print what each job would run (as text, or a JSON list of plans); exit 0, or 1 if a
    request can never be satisfied."""
    from ccd.engine import dryrun

    logs.configure(None)  # stdout is the plans' (--json): backend log lines must not land there
    plans = asyncio.run(dryrun.plan_workflow(spec, state_dir / paths.RUNS_NAME))
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(p) for p in plans], indent=2))
    else:
        click.echo(dryrun.render(plans))
    sys.exit(1 if any(p.problems for p in plans) else 0)
