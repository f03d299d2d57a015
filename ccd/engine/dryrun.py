"""``--dry-run``: what each job of a workflow would run, without running anything.

Slurm jobs show their exact batch script and sbatch command line, and their requests are
checked against the live partition limits when the cluster answers.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ccd.engine.launch import launch_for
from ccd.executors.base import WRAPPER_NAME, Executor
from ccd.executors.local import local_argv
from ccd.executors.slurm_parse import effective_resources, render_batch
from ccd.spec import WorkflowSpec
from ccd.spec.hosts import SlurmOptions

PLACEHOLDER_ID = "DRYRUN"


@dataclass(frozen=True, slots=True)
class JobPlan:
    job: str
    host: str
    command: str  # the command line in the run dir (with the wrapper, on remote hosts)
    batch_script: str | None = None  # Slurm jobs only
    sbatch: str | None = None
    problems: tuple[str, ...] = ()  # requests the cluster could never satisfy
    notes: tuple[str, ...] = ()  # e.g. the cluster did not answer: limits not checked


async def plan(
    spec: WorkflowSpec, runs_root: Path, executors: dict[str, Executor]
) -> list[JobPlan]:
    """One plan per job, in file order; ``executors`` give Slurm hosts their shells."""
    plans = []
    limits_cache: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for job in spec.jobs.values():
        if job.matrix is not None:  # a sweep's group runs nothing itself
            note = "a matrix group: runs nothing; succeeds once all its members have"
            if job.matrix.dynamic:
                note = "a matrix decided at run time: its members are made once its parents ran"
            plans.append(JobPlan(job.name, job.host, "(none)", notes=(note,)))
            continue
        launch = launch_for(job, PLACEHOLDER_ID, 1, runs_root)
        host = spec.hosts.get(job.host)
        if host is None or host.type == "local":  # started by the shepherd, no wrapper
            plans.append(JobPlan(job.name, job.host, shlex.join(local_argv(launch))))
            continue
        command = shlex.join(["sh", WRAPPER_NAME, *launch.argv])
        if not isinstance(host.options, SlurmOptions):
            plans.append(JobPlan(job.name, job.host, command))
            continue
        script, argv = render_batch(launch, host.options)
        resources = effective_resources(launch, host.options)
        key = (job.host, repr(resources))
        if key not in limits_cache:
            limits_cache[key] = await _check(executors[job.host], resources)
        problems, notes = limits_cache[key]
        plans.append(
            JobPlan(job.name, job.host, command, script, shlex.join(argv), problems, notes)
        )
    return plans


async def _check(executor: Executor, resources: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(problems, notes): the requests' problems if the cluster answers, else a note."""
    from ccd.executors.slurm import SlurmExecutor, check_limits
    from ccd.spec.hosts import Resources

    assert isinstance(executor, SlurmExecutor) and isinstance(resources, Resources)
    try:
        ping = await executor.shell.run(["scontrol", "ping"], timeout_s=15)
        if ping.returncode != 0:
            return (), ("the cluster did not answer: limits not checked",)
        return tuple(await check_limits(executor.shell, resources, resources.partition)), ()
    except (OSError, TimeoutError) as err:
        return (), (f"the cluster is not reachable ({err}): limits not checked",)


async def plan_workflow(spec: WorkflowSpec, runs_root: Path) -> list[JobPlan]:
    """`plan` with executors built for the workflow's own hosts (and closed after)."""
    from ccd.engine.core import make_executors

    executors = make_executors(spec.hosts)
    try:
        return await plan(spec, runs_root, executors)
    finally:
        for executor in executors.values():
            await executor.close()


def render(plans: list[JobPlan]) -> str:
    out: list[str] = []
    for p in plans:
        out.append(f"== {p.job} (host {p.host})")
        if p.batch_script is not None:
            out += [f"$ {p.sbatch}", p.batch_script.rstrip()]
        else:
            out.append(f"$ {p.command}")
        out += [f"!! {problem}" for problem in p.problems]
        out += [f"-- {note}" for note in p.notes]
    return "\n".join(out)
