"""Slurm: job arrays against one sbatch per job, and batched polling against per-job polling,
each measured against its baseline in the same run.

**Arrays** (the default section, ``--section arrays``): a fan of N independent jobs (``true``)
to one Slurm host, run to the end through the real engine (store, scheduler, executor), twice:
with arrays (the default: one moment's ready jobs go out as one ``sbatch --array``) and with
``arrays: false`` (one ``sbatch`` per job; ``max_jobs`` N, so that both keep all N in Slurm at
once). For each: ``sbatch`` calls, status queries (``squeue``, ``sacct``), slurmctld's
RPCs from ``sdiag``, wall time from submit to all-done, and ccd's CPU: the engine's process
(event loop, SQLite) and the Slurm commands it ran (its children). Targets: at most 1 sbatch
per 100 ready jobs, and faster to all-done than one sbatch per job.

**Polling** (``--section polling``): submits N short jobs (``sleep 1``) through
`SlurmExecutor`, held (``--hold``) so that all N are in flight at once; lets a few poll rounds
pass; releases them with one ``scontrol release`` and waits for all of them. Twice:

- **ccd**: the executor as shipped: each poll round reads the status files (one ``sh``, not
  a Slurm command), then ONE ``squeue -j id,id,...`` for the jobs without a clean exit
  record (and ONE ``sacct`` if some left squeue);
- **per-job baseline**: the same executor, same adaptive interval, but one
  ``squeue -j ID`` per unfinished job per round (what a naive poller does), with no command
  budget (it would not keep up under ccd's).

For each it counts the Slurm commands issued (per round and in total) and the RPCs slurmctld
saw, by message type, from ``sdiag`` before and after (run it on a quiet cluster: sdiag counts
everything, including slurmd's own messages such as REQUEST_COMPLETE_BATCH_SCRIPT).

    python bench/slurm_bench.py                 # arrays: a 500-job fan, with and without
    python bench/slurm_bench.py --section polling --jobs 300   # polling (slow with 2 CPUs:
                                                # ~2 jobs/s)
    python bench/slurm_bench.py --cpus 32       # first restart the test cluster with 32 CPUs
                                                # (scripts/infra/slurm-up.sh, SLURM_UP_CPUS)

Run as root on the test machine (sdiag needs a privileged user on most clusters).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from ccd.engine import Engine
from ccd.executors.base import Launch
from ccd.executors.shell import LocalShell
from ccd.executors.slurm import SlurmExecutor
from ccd.executors.slurm_parse import JobRow, parse_sdiag_rpcs
from ccd.models import Limits
from ccd.spec import HostSpec, JobSpec, WorkflowSpec
from ccd.spec.hosts import Resources, SlurmOptions

REPO = Path(__file__).resolve().parents[1]


class PerJobPollingExecutor(SlurmExecutor):
    """The baseline: one squeue per job per round, no command budget."""

    COMMANDS_PER_S = 1e9
    COMMAND_BURST = 1e9

    async def squeue_rows(self, ids: Sequence[str]) -> dict[str, JobRow]:
        rows: dict[str, JobRow] = {}
        for job_id in ids:
            rows.update(await super().squeue_rows([job_id]))
        return rows


@dataclass
class Result:
    label: str
    jobs: int
    wall_s: float
    submit_s: float
    ok: int
    rounds: list[int]
    held_rounds: list[int]  # the rounds while all N jobs were queued
    commands: Counter[str]
    rpcs: Counter[str]


def sdiag() -> Counter[str]:
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    return Counter(parse_sdiag_rpcs(out))


async def run_phase(
    label: str,
    cls: type[SlurmExecutor],
    n: int,
    options: SlurmOptions,
    root: Path,
    held_rounds: int,
) -> Result:
    wf = f"b{secrets.token_hex(4)}"
    launches = [
        Launch(
            wf,
            f"j{i}",
            1,
            root / wf / f"j{i}" / "1",
            root / "inline.sh",
            ("sh", "./inline.sh"),
            {},
            inline="sleep 1",
        )
        for i in range(n)
    ]
    ex = cls("bench", LocalShell(), options)
    before = sdiag()
    t0 = time.monotonic()
    try:
        handles = await asyncio.gather(*(ex.start(launch) for launch in launches))
        submit_s = time.monotonic() - t0
        waits = [asyncio.ensure_future(ex.wait(h)) for h in handles]
        first = len(ex.round_commands)
        while len(ex.round_commands) < first + held_rounds:  # noqa: ASYNC110 (a counter)
            await asyncio.sleep(0.05)
        held = ex.round_commands[first:]
        await release([str(h.job_id) for h in handles])
        results = await asyncio.gather(*waits)
        wall_s = time.monotonic() - t0
    finally:
        await ex.close()
    rpcs = sdiag()
    rpcs.subtract(before)
    return Result(
        label,
        n,
        wall_s,
        submit_s,
        sum(r.ok for r in results),
        list(ex.round_commands),
        held,
        Counter(ex.command_counts),
        +rpcs,
    )


async def release(ids: list[str]) -> None:
    """One ``scontrol release`` for all of them (not counted: the bench's, not ccd's)."""
    proc = await asyncio.create_subprocess_exec("scontrol", "release", ",".join(ids))
    await proc.wait()


def table(results: list[Result]) -> str:
    def row(name: str, *cells: object) -> str:
        return f"| {name} | " + " | ".join(str(c) for c in cells) + " |"

    lines = [row("", *(r.label for r in results)), "|---|" + "---:|" * len(results)]
    lines.append(row("jobs (succeeded)", *(f"{r.jobs} ({r.ok})" for r in results)))
    lines.append(
        row("wall time, s (submit)", *(f"{r.wall_s:.1f} ({r.submit_s:.1f})" for r in results))
    )
    lines.append(row("poll rounds", *(len(r.rounds) for r in results)))
    held = [" ".join(map(str, r.held_rounds)) for r in results]
    lines.append(row(f"Slurm commands per round, all {results[0].jobs} queued", *held))
    spread = [
        f"{max(r.rounds, default=0)} / {sum(r.rounds) / max(len(r.rounds), 1):.1f}" for r in results
    ]
    lines.append(row("Slurm commands per round, whole run: max / mean", *spread))
    for cmd in ("sbatch", "squeue", "sacct", "scancel", "sh"):
        label = f"`{cmd}` runs" + (" (status-file reads)" if cmd == "sh" else "")
        lines.append(row(label, *(r.commands[cmd] for r in results)))
    lines.append(row("slurmctld RPCs, all types", *(r.rpcs.total() for r in results)))
    kinds = sorted({k for r in results for k in r.rpcs}, key=lambda k: -results[0].rpcs[k])
    lines += [row(f"RPC {k}", *(r.rpcs[k] for r in results)) for k in kinds]
    return "\n".join(lines)


@dataclass
class FanResult:
    label: str
    jobs: int
    ok: int
    wall_s: float
    sbatch: int
    arrays: int
    squeue: int
    sacct: int
    engine_cpu_s: float
    commands_cpu_s: float
    rpcs: Counter[str]


async def fan_phase(label: str, arrays: bool, n: int, args: argparse.Namespace) -> FanResult:
    """N independent jobs through the engine to one Slurm host, to the end."""
    options = SlurmOptions(
        poll_interval_s=args.max_interval,
        poll_interval_min_s=args.min_interval,
        arrays=arrays,
        max_queued=n,
    )
    host = HostSpec("hpc", "slurm", max_jobs=None if arrays else n, options=options)
    hosts = {"local": HostSpec("local", "local"), "hpc": host}
    with tempfile.TemporaryDirectory(prefix="ccd-slurm-fan-") as tmp:
        root = Path(tmp)
        jobs = {f"j{i}": JobSpec(f"j{i}", "shell", run="true", host="hpc") for i in range(n)}
        spec = WorkflowSpec("fan", root / "wf.yaml", root, jobs, hosts)
        engine = await Engine.open(root / "state", hosts, Limits())
        before_rpcs, before = (
            sdiag(),
            (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            ),
        )
        t0 = time.monotonic()
        try:
            wf = await engine.scheduler.submit(spec)
            await engine.scheduler.wait(wf)
            wall_s = time.monotonic() - t0
            after = (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            )
            status = await engine.status(wf)
            executor = engine._executors["hpc"]
            assert isinstance(executor, SlurmExecutor)
            counts = Counter(executor.command_counts)
            arrays_made = executor.submit_queue.arrays
        finally:
            await engine.close()
    rpcs = sdiag()
    rpcs.subtract(before_rpcs)
    return FanResult(
        label,
        n,
        sum(j.state.value == "succeeded" for j in status.jobs),
        wall_s,
        counts["sbatch"],
        arrays_made,
        counts["squeue"],
        counts["sacct"],
        _cpu_s(after[0]) - _cpu_s(before[0]),
        _cpu_s(after[1]) - _cpu_s(before[1]),
        +rpcs,
    )


def _cpu_s(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def fan_table(results: list[FanResult]) -> str:
    def row(name: str, *cells: object) -> str:
        return f"| {name} | " + " | ".join(str(c) for c in cells) + " |"

    lines = [row("", *(r.label for r in results)), "|---|" + "---:|" * len(results)]
    lines.append(row("jobs (succeeded)", *(f"{r.jobs} ({r.ok})" for r in results)))
    lines.append(row("`sbatch` calls (arrays)", *(f"{r.sbatch} ({r.arrays})" for r in results)))
    lines.append(
        row("ready jobs per sbatch", *(f"{r.jobs / max(r.sbatch, 1):.0f}" for r in results))
    )
    lines.append(
        row("status queries: `squeue` / `sacct`", *(f"{r.squeue} / {r.sacct}" for r in results))
    )
    lines.append(row("wall time to all-done, s", *(f"{r.wall_s:.1f}" for r in results)))
    lines.append(row("ccd CPU: engine process, s", *(f"{r.engine_cpu_s:.2f}" for r in results)))
    lines.append(
        row("ccd CPU: its Slurm commands, s", *(f"{r.commands_cpu_s:.2f}" for r in results))
    )
    lines.append(row("slurmctld RPCs, all types", *(r.rpcs.total() for r in results)))
    for kind in ("REQUEST_SUBMIT_BATCH_JOB", "REQUEST_JOB_INFO", "REQUEST_CANCEL_JOB_STEP"):
        lines.append(row(f"RPC {kind}", *(r.rpcs[kind] for r in results)))
    return "\n".join(lines)


async def arrays_section(args: argparse.Namespace) -> None:
    results = [
        await fan_phase("arrays", True, args.jobs, args),
        await fan_phase("one sbatch per job", False, args.jobs, args),
    ]
    print(
        f"\n{args.jobs}-job fan (`true`) to one Slurm host through the engine, to the end; "
        f"poll interval {args.min_interval}-{args.max_interval} s (adaptive)\n"
    )
    print(fan_table(results))
    arrays, single = results
    print(
        f"\ntargets: <= 1 sbatch per 100 ready jobs: {arrays.sbatch * 100 <= arrays.jobs} "
        f"({arrays.sbatch} for {arrays.jobs}); faster to all-done than one sbatch per job: "
        f"{arrays.wall_s < single.wall_s} ({arrays.wall_s:.1f} s vs {single.wall_s:.1f} s)"
    )


def restart_cluster(cpus: int) -> None:
    env = dict(os.environ, SLURM_UP_CPUS=str(cpus))
    print(f"restarting the test cluster with SLURM_UP_CPUS={cpus} ...", file=sys.stderr)
    subprocess.run(
        ["bash", str(REPO / "scripts/infra/slurm-up.sh")],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


async def main(args: argparse.Namespace) -> None:
    if args.section in ("arrays", "all"):
        await arrays_section(args)
    if args.section in ("polling", "all"):
        await polling_section(args)


async def polling_section(args: argparse.Namespace) -> None:
    options = SlurmOptions(
        poll_interval_s=args.max_interval,
        poll_interval_min_s=args.min_interval,
        resources=Resources(sbatch_args=("--hold",)),
        arrays=False,  # one job per sbatch: this section is about polling
    )
    phases = (("ccd (batched)", SlurmExecutor), ("per-job baseline", PerJobPollingExecutor))
    with tempfile.TemporaryDirectory(prefix="ccd-slurm-bench-") as tmp:
        results = [
            await run_phase(label, cls, args.jobs, options, Path(tmp), args.held_rounds)
            for label, cls in phases
        ]
    print(
        f"\n{args.jobs} Slurm jobs (sleep 1), submitted held, {args.held_rounds} poll rounds "
        f"with all queued, then released; poll interval {args.min_interval}-"
        f"{args.max_interval} s (adaptive); ccd's budget {SlurmExecutor.COMMANDS_PER_S:g} "
        f"commands/s, {SlurmExecutor.MAX_CONCURRENT_COMMANDS} at once\n"
    )
    print(table(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=("arrays", "polling", "all"), default="arrays")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--cpus", type=int, help="restart the test cluster with this many CPUs")
    parser.add_argument("--min-interval", type=float, default=0.5)
    parser.add_argument("--max-interval", type=float, default=5.0)
    parser.add_argument("--held-rounds", type=int, default=4)
    parsed = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    if parsed.cpus:
        restart_cluster(parsed.cpus)
    asyncio.run(main(parsed))
