"""Shared fixtures: workflow files in tmp dirs and engines over real SQLite and processes."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ccd.engine import Engine, Limits
from ccd.spec import WorkflowSpec, load

# Fast pacing for tests: retries and kills do not need to wait seconds.
FAST = Limits(retry_backoff_s=0.01, kill_grace_s=1.0, progress_interval_s=0.05)


@pytest.fixture
def write_workflow(tmp_path: Path) -> Callable[..., Path]:
    """Write a workflow file (dedented YAML) plus optional extra files; return its path."""

    def write(text: str, name: str = "wf.yaml", **files: str) -> Path:
        for filename, content in files.items():
            (tmp_path / filename).write_text(textwrap.dedent(content))
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
async def engine_for(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Open an Engine for a spec over a state dir in tmp_path; closed after the test."""
    opened: list[Engine] = []

    async def open_engine(spec: WorkflowSpec, limits: Limits = FAST) -> Engine:
        engine = await Engine.open(tmp_path / "state", spec.hosts, limits)
        opened.append(engine)
        return engine

    yield open_engine
    for engine in opened:
        await engine.close()


async def run_spec(engine: Engine, spec: WorkflowSpec, **kwargs: object) -> dict[str, dict]:
    """Submit, wait, and return {job name: job status JSON}."""
    wf_id = await engine.scheduler.submit(spec, **kwargs)  # type: ignore[arg-type]
    await engine.scheduler.wait(wf_id)
    status = (await engine.status(wf_id)).to_json()
    return {j["name"]: j for j in status["jobs"]} | {"": status["workflow"]}


def load_text(write: Callable[..., Path], text: str, **files: str) -> WorkflowSpec:
    return load(write(text, **files))
