"""Slurm's text, in and out, without I/O: the batch script of an attempt, readers of the
commands' output, and how a finished Slurm job is classified.

`ccd.executors.slurm` runs the commands (with the formats named below) and feeds their
output to these functions; the unit tests feed them output captured from a real Slurm 22.05
(``tests/data/slurm/``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from ccd.errors import ExecutorError
from ccd.executors.base import (
    WRAPPER_NAME,
    Handle,
    Launch,
    StatusRecord,
    result_env,
    wrapper_exit,
)
from ccd.models import ExitStatus
from ccd.spec.hosts import Resources, SlurmOptions, clock_s, format_walltime
from ccd.usage import Request, Usage, parse_size_bytes

SBATCH = ("sbatch", "--parsable")
BATCH_NAME = "job.sbatch"
SLURM_OUT_NAME = "slurm.out"  # Slurm's own messages (e.g. "CANCELLED ... DUE TO TIME LIMIT")
# The squeue fields asked for (`squeue -O`): "|" after each, no padding, nothing cut short.
# An array's elements are ARRAYJOBID_TASKID (the JobID column is the raw id, shared by the
# elements not started yet): asked with -r, one line per element.
SQUEUE_FIELDS = "JobID:|,State:|,Reason:|,exit_code:|,Name:|,ArrayJobID:|,ArrayTaskID:|"
# The sacct fields asked for (`sacct -n -P -o`, steps included: MaxRSS is a step's figure).
SACCT_FIELDS = (
    "JobID,JobName,State,ExitCode,Reason,TotalCPU,MaxRSS,Elapsed,ReqMem,AllocCPUS,Timelimit"
)
# `sinfo -h -N -o`: node, CPUs, memory (MiB), generic resources, partition ("debug*": default).
SINFO_NODE_FORMAT = "%N|%c|%m|%G|%P"

# States after which a job never runs again (with --no-requeue, which ccd always sets).
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
# Pending reasons that mean the job as submitted can never start (more CPUs or nodes than the
# partition has, an unknown account...): ccd cancels it and fails the attempt.
NEVER_STARTS = frozenset(
    {
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
    }
)
# Terminal states that are not the job's own doing: the reason ccd records.
REASON_BY_STATE = {
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "OUT_OF_MEMORY": "out_of_memory",
    "NODE_FAIL": "node_fail",
    "BOOT_FAIL": "node_fail",
    "PREEMPTED": "preempted",
    "CANCELLED": "cancelled",
    "REVOKED": "cancelled",
}

_T = TypeVar("_T")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_ID_RE = re.compile(r"^(\d+)(?:;\S*)?$")
_EXIT_PAIR_RE = re.compile(r"^(\d+):(\d+)$")
_SACCT_ID_RE = re.compile(r"^(\d+(?:_\d+)?)(?:\.(\S+))?$")  # 81, 81_3, 81_3.batch
_SDIAG_RPC_RE = re.compile(r"^\s*([A-Z][A-Z0-9_]+)\s+\(\s*\d+\)\s+count:(\d+)")
_GPU_GRES_RE = re.compile(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)")


# -- the batch script -------------------------------------------------------------------


def job_tag(workflow_id: str, job: str, attempt: int) -> str:
    """The Slurm job name of an attempt: unique, and how a restarted daemon finds it."""
    return f"ccd:{workflow_id}:{job}:{attempt}"


def cluster_run_dir(launch: Launch | Handle, options: SlurmOptions, root: str | None = None) -> str:
    """Where the attempt runs on the cluster (``root``: ``options.root`` with ~ resolved)."""
    if options.via == "local":
        return str(launch.run_dir.absolute())
    base = (root or options.root).rstrip("/")
    return f"{base}/{launch.workflow_id}/{launch.job}/{launch.attempt}"


def effective_resources(launch: Launch, options: SlurmOptions) -> Resources:
    """The job's requests over the host's defaults, partition/account/qos last from the host."""
    res = (launch.resources or Resources()).merged_over(options.resources)
    host = Resources(partition=options.partition, account=options.account, qos=options.qos)
    return res.merged_over(host)


def sbatch_lines(res: Resources) -> list[str]:
    """The ``#SBATCH`` options for ``res`` (validated names and numbers only)."""
    opts: list[str] = []
    for flag, value in (
        ("--partition", res.partition),
        ("--account", res.account),
        ("--qos", res.qos),
        ("--nodes", res.nodes),
        ("--ntasks", res.ntasks),
        ("--cpus-per-task", res.cpus),
        ("--gpus", res.gpus),
        ("--constraint", res.constraint),
    ):
        if value is not None:
            opts.append(f"{flag}={value}")
    if res.mem_kib is not None:
        opts.append(f"--mem={res.mem_kib}K")
    if res.time_s is not None:
        opts.append(f"--time={format_walltime(res.time_s)}")
    return [*opts, *res.sbatch_args]


def render_batch(
    launch: Launch, options: SlurmOptions, run_dir: str | None = None
) -> tuple[str, list[str]]:
    """The batch script of an attempt and the sbatch command line that submits it (pure:
    also what ``--dry-run`` shows)."""
    run_dir = run_dir or cluster_run_dir(launch, options)
    header = [
        f"--job-name={job_tag(launch.workflow_id, launch.job, launch.attempt)}",
        f"--chdir={run_dir}",
        f"--output={run_dir}/{SLURM_OUT_NAME}",
        "--no-requeue",  # ccd retries by its own policy; a requeued attempt must not rerun
        *sbatch_lines(effective_resources(launch, options)),
    ]
    env = {
        **launch.env,
        "CCD_WORKFLOW": launch.workflow_id,
        "CCD_JOB": launch.job,
        "CCD_ATTEMPT": str(launch.attempt),
        "CCD_RUN_DIR": run_dir,
        **result_env(run_dir),
    }
    bad = [name for name in env if not _ENV_NAME_RE.match(name)]
    if bad:
        raise ExecutorError(f"invalid environment variable name(s): {', '.join(bad)}")
    lines = ["#!/bin/sh", *(f"#SBATCH {shlex.quote(opt)}" for opt in header)]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines.append(f"exec {shlex.join(['sh', f'./{WRAPPER_NAME}', *launch.argv])}")
    return "\n".join(lines) + "\n", [*SBATCH, f"{run_dir}/{BATCH_NAME}"]


# -- command output ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as squeue or sacct reports it. ``state`` is the bare state word (sacct's
    "CANCELLED by 0" becomes "CANCELLED"); ``reason`` is None where Slurm says "None"."""

    job_id: str
    state: str
    reason: str | None = None
    code: int | None = None
    signal: int | None = None
    name: str = ""
    usage: Usage | None = None  # sacct's figures (TotalCPU, peak MaxRSS of its steps, Elapsed)
    request: Request | None = None  # what it was given (AllocCPUS, ReqMem, Timelimit)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    name: str
    default: bool = False
    state: str = "UP"
    max_time_s: int | None = None  # None: unlimited
    max_nodes: int | None = None
    max_mem_per_node_mib: int | None = None
    max_cpus_per_node: int | None = None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    cpus: int
    mem_mib: int
    gpus: int
    partitions: tuple[str, ...]


def newest_by_name(rows: Mapping[str, JobRow], found: dict[str, JobRow]) -> None:
    """Add ``rows`` to ``found`` by job name, the highest job id winning."""
    for row in rows.values():
        best = found.get(row.name)
        if best is None or _id_order(row.job_id) > _id_order(best.job_id):
            found[row.name] = row


def _id_order(job_id: str) -> tuple[int, ...]:
    """A job id (``81``, or an element's ``81_3``) as something to compare."""
    return tuple(int(part) for part in job_id.split("_"))


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """``items`` in slices of ``size``: command lines stay far below ARG_MAX."""
    return (items[i : i + size] for i in range(0, len(items), size))


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` (``ID`` or ``ID;cluster``)."""
    match = _JOB_ID_RE.match(stdout.strip())
    if match is None:
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return match.group(1)


def parse_squeue(text: str) -> dict[str, JobRow]:
    """Rows of ``squeue -h -r -O SQUEUE_FIELDS`` by job id: an array element's is
    ``ARRAYID_TASKID``. ``exit_code`` there is the raw wait status (768 for ``exit 3``, 9 for
    SIGKILL)."""
    rows: dict[str, JobRow] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        job_id, state, reason, raw, name = parts[:5]
        if len(parts) >= 7 and parts[6].isdigit() and parts[5].isdigit():
            job_id = f"{parts[5]}_{parts[6]}"
        code, signum = decode_wait_status(raw)
        rows[job_id] = JobRow(job_id, _state_word(state), _reason(reason), code, signum, name)
    return rows


def parse_sacct(text: str) -> dict[str, JobRow]:
    """Rows of ``sacct -n -P -o SACCT_FIELDS`` by job id (an element's: ``ARRAYID_TASKID``),
    with what each used and was given; its steps' lines give only their peak memory (the
    largest is the job's). Elements not started yet (``81_[4-9]``) are skipped, and the
    figures are None where sacct's fields are empty (e.g. MaxRSS of a job shorter than the
    cluster's accounting interval)."""
    rows: dict[str, JobRow] = {}
    peaks: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split("|")
        match = _SACCT_ID_RE.match(parts[0])
        if len(parts) < 5 or match is None:
            continue
        job_id, step = match.groups()
        figures = (parts[5:] + [""] * 6)[:6]  # absent from older captures: unknown
        if step is not None:
            rss = parse_size_bytes(figures[1])
            if rss is not None:
                peaks[job_id] = max(peaks.get(job_id, 0), rss)
            continue
        _, name, state, exit_pair, reason = parts[:5]
        code, signum = parse_exit_pair(exit_pair)
        usage, request = _accounted(figures)
        rows[job_id] = JobRow(
            job_id, _state_word(state), _reason(reason), code, signum, name, usage, request
        )
    return {
        job_id: replace(row, usage=replace(row.usage or Usage(), max_rss_bytes=peaks[job_id]))
        if job_id in peaks
        else row
        for job_id, row in rows.items()
    }


def _accounted(figures: list[str]) -> tuple[Usage | None, Request | None]:
    """(usage, request) from sacct's TotalCPU, MaxRSS, Elapsed, ReqMem, AllocCPUS, Timelimit."""
    total_cpu, max_rss, elapsed, req_mem, alloc_cpus, limit = figures
    usage = Usage(parse_clock_s(elapsed), parse_clock_s(total_cpu), parse_size_bytes(max_rss))
    cpus = int(alloc_cpus) if alloc_cpus.isdigit() and int(alloc_cpus) > 0 else None
    request = Request(cpus, _req_mem_bytes(req_mem, cpus), parse_clock_s(limit))
    return (usage if usage != Usage() else None), (request or None)


def _req_mem_bytes(text: str, cpus: int | None) -> int | None:
    """ReqMem: ``21694M`` (22.05 and later: the job's); ``4000Mc`` per CPU, ``4000Mn`` per
    node in older releases (taken as one node)."""
    text = text.strip()
    if text[-1:] in ("c", "n"):
        per, text = text[-1], text[:-1]
        size = parse_size_bytes(text)
        return size * (cpus or 1) if size is not None and per == "c" else size
    return parse_size_bytes(text)


def parse_clock_s(text: str) -> float | None:
    """Seconds from sacct's ``[D-][HH:]MM:SS[.mmm]`` (TotalCPU, Elapsed, Timelimit); None for
    UNLIMITED, Partition_Limit or an empty field."""
    whole, _, fraction = text.strip().partition(".")
    seconds = clock_s(whole) if ":" in whole else None  # a bare number is not sacct's
    if seconds is None or (fraction and not fraction.isdigit()):
        return None
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def decode_wait_status(raw: str) -> tuple[int | None, int | None]:
    """(code, signal) from a wait status as squeue prints it; (None, None) if unparsable."""
    try:
        value = int(raw)
    except ValueError:
        return None, None
    return (value >> 8) & 0xFF, value & 0x7F


def parse_exit_pair(text: str) -> tuple[int | None, int | None]:
    """(code, signal) from Slurm's ``CODE:SIGNAL``; (None, None) if unparsable."""
    match = _EXIT_PAIR_RE.match(text.strip())
    if match is None:
        return None, None
    return int(match.group(1)), int(match.group(2))


def _state_word(state: str) -> str:
    return state.split(" ", 1)[0].rstrip("+").upper()


def _reason(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "None", "(null)") else text


def parse_status_dump(data: bytes) -> dict[str, str]:
    """Status files as printed by the batched read: ``PATH NUL CONTENT NUL`` per existing
    file. Maps each path to its text."""
    parts = data.split(b"\0")
    files: dict[str, str] = {}
    for i in range(0, len(parts) - 1, 2):
        files[parts[i].decode(errors="replace")] = parts[i + 1].decode(errors="replace")
    return files


def classify(row: JobRow | None, record: StatusRecord) -> ExitStatus:
    """How an attempt ended, from its status file and Slurm's final word (if any).

    The wrapper's exit record gives the code; Slurm's state gives the reason where the job
    did not end by itself (TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, CANCELLED). An exit
    code of 0 is a success whatever Slurm says. Without an exit record the wrapper never ran
    or was killed outright: Slurm's ``CODE:SIGNAL`` is all there is; with no Slurm record
    either, the attempt is "lost". What it used: sacct's figures where the row has them,
    else (or where they are empty) the wrapper's."""
    status = _ended(row, record)
    accounted = row.usage if row is not None else None
    usage = accounted.merged_over(record.usage) if accounted else record.usage
    return replace(status, usage=usage)


def _ended(row: JobRow | None, record: StatusRecord) -> ExitStatus:
    reason = REASON_BY_STATE.get(row.state) if row is not None else None
    code = record.exit_code
    if code is not None:
        return ExitStatus(0) if code == 0 else wrapper_exit(code, reason)
    if row is None:
        return ExitStatus(None, reason="lost")
    if row.signal:
        return ExitStatus(None, row.signal, reason)
    if row.code:
        return ExitStatus(row.code, None, reason)
    return ExitStatus(None, None, reason or "lost")


def parse_duration_s(text: str) -> int | None:
    """Seconds from Slurm's ``[D-]HH:MM:SS`` / ``MM:SS`` / ``MM`` (MaxTime, TimeLimit); None
    for UNLIMITED/INFINITE or anything unparsable."""
    return clock_s(text.strip())


def parse_scontrol_records(text: str) -> list[dict[str, str]]:
    """``scontrol show ... -o`` output: one ``Key=Value Key=Value`` record per line."""
    records = []
    for line in text.splitlines():
        pairs = (word.partition("=") for word in line.split())
        record = {key: value for key, sep, value in pairs if sep}
        if record:
            records.append(record)
    return records


def parse_partitions(text: str) -> dict[str, PartitionInfo]:
    """Partitions from ``scontrol show partition -o``, by name."""
    parts: dict[str, PartitionInfo] = {}
    for rec in parse_scontrol_records(text):
        name = rec.get("PartitionName")
        if not name:
            continue
        parts[name] = PartitionInfo(
            name=name,
            default=rec.get("Default") == "YES",
            state=rec.get("State", "UP"),
            max_time_s=parse_duration_s(rec.get("MaxTime", "UNLIMITED")),
            max_nodes=_limit(rec.get("MaxNodes")),
            max_mem_per_node_mib=_limit(rec.get("MaxMemPerNode")),
            max_cpus_per_node=_limit(rec.get("MaxCPUsPerNode")),
        )
    return parts


def _limit(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and int(text) > 0 else None


def parse_sinfo_nodes(text: str) -> list[NodeInfo]:
    """Nodes from ``sinfo -h -N -o SINFO_NODE_FORMAT`` (a node in several partitions is
    listed once per partition; merged here)."""
    nodes: dict[str, NodeInfo] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5 or not parts[1].isdigit():
            continue
        name, cpus, mem, gres, partition = parts[:5]
        gpu = _GPU_GRES_RE.search(gres)
        seen = nodes[name].partitions if name in nodes else ()
        nodes[name] = NodeInfo(
            name,
            int(cpus),
            int(mem) if mem.isdigit() else 0,
            int(gpu.group(1)) if gpu else 0,
            (*seen, partition.rstrip("*")),
        )
    return list(nodes.values())


def parse_sdiag_rpcs(text: str) -> dict[str, int]:
    """RPC counts by message type from ``sdiag`` (its "by message type" section)."""
    counts: dict[str, int] = {}
    in_section = False
    for line in text.splitlines():
        if line.startswith("Remote Procedure Call statistics by"):
            in_section = "message type" in line
            continue
        match = _SDIAG_RPC_RE.match(line) if in_section else None
        if match is not None:
            counts[match.group(1)] = int(match.group(2))
    return counts


def limit_problems(
    resources: Resources, partition: PartitionInfo, nodes: list[NodeInfo]
) -> list[str]:
    """What in ``resources`` the partition or its nodes can never satisfy (empty: fits)."""
    problems: list[str] = []
    where = f"partition '{partition.name}'"
    if partition.state != "UP":
        problems.append(f"{where} is {partition.state}")
    limit = partition.max_time_s
    if resources.time_s is not None and limit is not None and resources.time_s > limit:
        problems.append(
            f"time {format_walltime(resources.time_s)} exceeds {where}'s "
            f"MaxTime {format_walltime(limit)}"
        )
    members = [n for n in nodes if partition.name in n.partitions]
    problems += _node_count_problems(resources, partition, len(members), where)
    problems += _per_node_problems(resources, partition, members, where)
    return problems


def _node_count_problems(
    resources: Resources, partition: PartitionInfo, count: int, where: str
) -> list[str]:
    wanted = resources.nodes
    if wanted is None:
        return []
    if partition.max_nodes is not None and wanted > partition.max_nodes:
        return [f"nodes {wanted} exceeds {where}'s MaxNodes {partition.max_nodes}"]
    if wanted > count:
        return [f"nodes {wanted}: {where} has only {count}"]
    return []


def _per_node_problems(
    resources: Resources, partition: PartitionInfo, members: list[NodeInfo], where: str
) -> list[str]:
    problems: list[str] = []
    max_cpus = max((n.cpus for n in members), default=0)
    if partition.max_cpus_per_node is not None:
        max_cpus = min(max_cpus, partition.max_cpus_per_node)
    if resources.cpus is not None and resources.cpus > max_cpus:
        problems.append(f"cpus {resources.cpus}: no node of {where} has more than {max_cpus}")
    max_mem_mib = max((n.mem_mib for n in members), default=0)
    if partition.max_mem_per_node_mib is not None:
        max_mem_mib = min(max_mem_mib, partition.max_mem_per_node_mib)
    if resources.mem_kib is not None and resources.mem_kib > max_mem_mib * 1024:
        problems.append(
            f"mem {resources.mem_kib // 1024}M: no node of {where} has more than {max_mem_mib}M"
        )
    max_gpus = max((n.gpus for n in members), default=0)
    per_node_gpus = -(-resources.gpus // (resources.nodes or 1)) if resources.gpus else 0
    if per_node_gpus > max_gpus:
        problems.append(f"gpus {resources.gpus}: nodes of {where} have at most {max_gpus}")
    return problems
