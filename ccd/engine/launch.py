"""A job's spec as stored and as launched: the JSON kept in the store (so the daemon can
run it after a restart), submit-time script snapshots, and the attempt's command line."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ccd.engine.accounting import escalated
from ccd.engine.store import JobRecord, NewJob, WorkflowRecord
from ccd.executors.base import Launch
from ccd.spec import JobSpec, WorkflowSpec
from ccd.spec.hosts import Resources
from ccd.spec.matrix import Matrix

INLINE_SCRIPT = "run.sh"  # the file an inline `run:` command is written to in the run dir
SNAPSHOT_DIR = ".scripts"  # job names cannot start with ".", so this never clashes with one


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A job's files as copied at submit: its script (None for an inline command) and
    its inputs."""

    script: Path | None
    inputs: tuple[Path, ...]


def snapshot_files(workflow_dir: Path, spec: WorkflowSpec, prefix: str = "") -> dict[str, Snapshot]:
    """Copy each script and input once, at submit, so later edits do not change this run.

    Jobs sharing a file share its copy (kept under its own name, which jobs may rely on).
    Inline commands need no file: their text is stored with the job. Jobs added later
    give a ``prefix`` of their own, so their copies never land on earlier ones."""
    copies: dict[Path, Path] = {}

    def copy(source: Path) -> Path:
        if source not in copies:
            target = workflow_dir / SNAPSHOT_DIR / f"{prefix}{len(copies)}" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copies[source] = target
        return copies[source]

    return {
        job.name: Snapshot(
            copy(job.script) if job.script is not None else None,
            tuple(copy(Path(p)) for p in job.inputs),
        )
        for job in spec.jobs.values()
        if job.script is not None or job.inputs
    }


def new_job(job: JobSpec) -> NewJob:
    """What a submit stores of a job (as it will run: see `with_snapshot`). Only the fields
    that differ from a JobSpec's defaults are kept: a big workflow's jobs are mostly
    defaults, and each key costs time at submit (a 100k-job workflow stores 100k of these)."""
    spec = {
        key: encode(value)
        for key, default, encode, _ in _STORED
        if (value := getattr(job, key)) != default
    }
    return NewJob(job.name, job.host, spec)


def with_snapshot(job: JobSpec, snapshot: Snapshot | None) -> JobSpec:
    """The job as it will run: reading its submit-time copies, not the user's files."""
    if snapshot is None:
        return job
    inputs = tuple(str(p) for p in snapshot.inputs)
    return replace(job, script=snapshot.script, inputs=inputs)


def job_spec(rec: JobRecord) -> JobSpec:
    """The JobSpec back from a stored row: the defaults, overridden by the stored fields.
    Nulls and unknown keys are skipped, so rows written with every field (as before schema
    v2) read back too."""
    stored = {
        key: _DECODE[key](value)
        for key, value in rec.spec.items()
        if value is not None and key in _DECODE
    }
    return replace(_BLANK, name=rec.name, host=rec.host, **stored)


def _as_is(value: Any) -> Any:
    return value


def _resources_json(resources: Resources) -> dict[str, Any]:
    return {f.name: getattr(resources, f.name) for f in fields(resources)}


def _resources_of(data: dict[str, Any]) -> Resources:
    return Resources(**{**data, "sbatch_args": tuple(data.get("sbatch_args", ()))})


# The defaults that stored jobs leave out. Its mappings are read-only: every job read
# back without an env or on_retry shares them.
_BLANK = JobSpec(
    "",
    "shell",
    env=MappingProxyType({}),
    on_retry=MappingProxyType({}),
    values=MappingProxyType({}),
    resource_refs=MappingProxyType({}),
)

# (JobSpec field, its default, to JSON, from JSON) for every stored field; json writes
# tuples as lists. The name and host have columns of their own; the line is not kept.
_STORED: tuple[tuple[str, Any, Callable[[Any], Any], Callable[[Any], Any]], ...] = tuple(
    (key, getattr(_BLANK, key), encode, decode)
    for key, encode, decode in (
        ("kind", _as_is, _as_is),
        ("run", _as_is, _as_is),
        ("script", str, Path),
        ("args", _as_is, tuple),
        ("env", dict, _as_is),  # a MappingProxyType is not JSON
        ("needs", _as_is, tuple),
        ("retries", _as_is, _as_is),
        ("timeout_s", _as_is, _as_is),
        ("python", _as_is, _as_is),
        ("inputs", _as_is, tuple),
        ("outputs", _as_is, tuple),
        ("resources", _resources_json, _resources_of),
        ("retry_on", sorted, frozenset),
        ("on_retry", dict, _as_is),
        ("matrix", Matrix.to_json, Matrix.from_json),
        ("group", _as_is, _as_is),
        ("values", dict, _as_is),
        ("resource_refs", dict, _as_is),
    )
)
_DECODE = {key: decode for key, _, _, decode in _STORED}


def launch_for(
    spec: JobSpec,
    wf_id: str,
    attempt: int,
    runs_root: Path,
    *,
    retries_so_far: int = 0,
    oom_mem_kib: int | None = None,
) -> Launch:
    """What an executor needs to start ``attempt`` of a job. After ``retries_so_far``
    failed attempts, its resources are escalated by ``on_retry`` that many times; after
    one that ran out of ``oom_mem_kib`` of memory, from that figure (see `accounting`)."""
    run_dir = runs_root.joinpath(wf_id, spec.name, str(attempt))  # one parse, not three
    script = spec.script if spec.script is not None else run_dir / INLINE_SCRIPT
    resources = spec.resources
    if resources is not None and spec.on_retry and retries_so_far:
        factors = {k: v**retries_so_far for k, v in spec.on_retry.items()}
        resources = resources.scaled(factors)
    if retries_so_far:
        resources = escalated(resources, spec.on_retry, oom_mem_kib)
    return Launch(
        workflow_id=wf_id,
        job=spec.name,
        attempt=attempt,
        run_dir=run_dir,
        script=script,
        argv=argv(spec, script.name),
        env=spec.env,
        inline=spec.run,
        inputs=tuple(Path(p) for p in spec.inputs),
        outputs=spec.outputs,
        resources=resources,
    )


def argv(spec: JobSpec, script_name: str) -> tuple[str, ...]:
    """The job's command line inside its run dir. ``./`` keeps a name like ``-x.sh`` from
    being read as an option."""
    path = f"./{script_name}"
    if spec.kind == "py":
        return (spec.python, path, *spec.args)
    if spec.kind == "ipynb":
        return (sys.executable, "-m", "ccd.notebook", path, *spec.args)
    if spec.kind == "shell":
        return (".", path, *spec.args)  # the wrapper sources it in a subshell: no extra exec
    shell = "bash" if spec.kind == "sh" and _wants_bash(spec.script) else "sh"
    return (shell, path, *spec.args)


@functools.lru_cache(maxsize=4096)  # scripts run from submit-time snapshots, which never change
def _wants_bash(script: Path | None) -> bool:
    """A ``.sh`` script whose ``#!`` line names bash gets bash; any other gets POSIX sh."""
    if script is None:
        return False
    try:
        with script.open("rb") as f:
            first = f.readline(256)
    except OSError:
        return False
    return first.startswith(b"#!") and b"bash" in first


def spec_of_records(wf: WorkflowRecord, records: Iterable[JobRecord]) -> WorkflowSpec:
    """A stored workflow's spec, rebuilt from its rows (hosts are the engine's business)."""
    jobs = {rec.name: job_spec(rec) for rec in records}
    return WorkflowSpec(wf.name, Path(wf.source), Path(wf.base_dir), jobs, {})
