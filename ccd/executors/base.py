"""The seam between the scheduler and the backends that run jobs.

The scheduler knows nothing about processes, SSH or Slurm: it hands an executor a `Launch`
(what to run, where its run directory is) and gets back a `Handle`, then awaits the attempt's
`ExitStatus`. Every attempt has a `status` file recording its start and exit, which is what
makes reattach after a daemon restart exact: remote backends run the same POSIX `sh` wrapper
(`wrapper.sh`) next to the job to write it; local jobs get it from their shepherd.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from ccd.executors.shell import Shell

# The attempt files' names live with the shepherd, which runs without the ccd package.
from ccd.executors.shepherd import LOG_NAME as LOG_NAME
from ccd.executors.shepherd import STATUS_NAME as STATUS_NAME
from ccd.models import ExitStatus
from ccd.spec.hosts import Resources
from ccd.spec.model import HostSpec
from ccd.usage import Request, Usage, parse_times_s

# A job's result files in its run dir, named to it by $CCD_OUTPUTS and $CCD_NEW_JOBS: read
# (with `Executor.read_file`) once it has succeeded.
OUTPUTS_NAME = "ccd-outputs"
NEW_JOBS_NAME = "ccd-new-jobs.yaml"


def result_env(run_dir: str) -> dict[str, str]:
    """The variables naming a job's result files (absolute: a job may change directory)."""
    return {
        "CCD_OUTPUTS": f"{run_dir}/{OUTPUTS_NAME}",
        "CCD_NEW_JOBS": f"{run_dir}/{NEW_JOBS_NAME}",
    }


WRAPPER_NAME = "wrapper.sh"
# Exit codes above 128 up to this are read as "killed by signal code-128" (the sh convention).
_MAX_SIGNAL = 64


@functools.cache
def wrapper_text() -> bytes:
    """The wrapper script shipped with the package, read once per process."""
    return resources.files("ccd.executors").joinpath(WRAPPER_NAME).read_bytes()


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything an executor needs to start one attempt.

    ``argv`` is the job's command as run inside ``run_dir`` by the wrapper, e.g.
    ``("sh", "script.sh", "--epochs", "3")``; ``script`` is the submit-time snapshot of the
    job's script, to be placed in the run directory under ``script.name`` (for an inline
    `run:` command, ``inline`` holds the text and ``script`` only names the file). Remote
    backends copy ``inputs`` (absolute local paths) into the run directory before the job
    starts and, after it succeeds, fetch what ``outputs`` match back to the local ``run_dir``."""

    workflow_id: str
    job: str
    attempt: int
    run_dir: Path
    script: Path
    argv: tuple[str, ...]
    env: Mapping[str, str]
    inline: str | None = None  # an inline command: write this text to script.name instead
    inputs: tuple[Path, ...] = ()  # local files copied into a remote run dir before start
    outputs: tuple[str, ...] = ()  # globs (relative to the run dir) fetched back after success
    resources: Resources | None = None  # batch requests (Slurm hosts), from the JobSpec


@dataclass(frozen=True, slots=True)
class Handle:
    """A started attempt: enough to wait for it, signal it, read its log or find it again."""

    workflow_id: str
    job: str
    attempt: int
    run_dir: Path
    pid: int | None
    host: str
    job_id: str | None = None  # the batch system's id (Slurm), where there is one


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """What the wrapper wrote to an attempt's ``status`` file (None where not written yet)."""

    pid: int | None = None
    start_ticks: int | None = None  # /proc/PID/stat starttime: tells a reused pid apart
    host: str | None = None
    started_at: float | None = None
    exit_code: int | None = None
    ended_at: float | None = None
    claimed: bool = False  # a recovering daemon claimed the attempt before the wrapper ran
    usage: Usage | None = None  # what the exit record says the job used


def parse_status(text: str, boot_time: float | None = None) -> StatusRecord:
    """Read a ``status`` file as the wrapper writes it (see ``wrapper.sh``).

    A last line without its newline may be a write in progress and is ignored, as are
    unknown lines, keys and unparsable values, so that newer wrappers stay readable.
    ``boot_time`` (epoch seconds) turns the wrapper's ``uptime=`` stamps into epoch times;
    without it only a ``time=`` stamp gives one."""
    fields: dict[str, dict[str, str]] = {}
    claimed = False
    for line in text.split("\n")[:-1]:
        kind, _, rest = line.partition(" ")
        if kind == "claimed":
            claimed = True
        elif kind in ("start", "exit"):
            fields[kind] = _key_values(rest)
    start = fields.get("start", {})
    end = fields.get("exit", {})
    return StatusRecord(
        pid=_int(start.get("pid")),
        start_ticks=_int(start.get("ticks")),
        host=start.get("host"),
        started_at=_epoch(start, boot_time),
        exit_code=_int(end.get("code")),
        ended_at=_epoch(end, boot_time),
        claimed=claimed,
        usage=_usage(start, end) if end else None,
    )


def _usage(start: dict[str, str], end: dict[str, str]) -> Usage:
    """What an exit record says was used: the wall time between the two stamps (of one
    clock), and CPU time, as the shepherd writes it (``cpu=`` seconds, ``maxrss=`` KiB from
    the kernel's rusage) or the wrapper (``utime=``/``stime=``, sh's ``times``)."""
    wall_s = None
    for clock in ("uptime", "time"):
        began, ended = _float(start.get(clock)), _float(end.get(clock))
        if began is not None and ended is not None:
            wall_s = max(0.0, ended - began)
            break
    cpu_s = _float(end.get("cpu"))
    if cpu_s is None and "utime" in end and "stime" in end:
        user_s, system_s = parse_times_s(end["utime"]), parse_times_s(end["stime"])
        cpu_s = user_s + system_s if user_s is not None and system_s is not None else None
    rss_kib = _int(end.get("maxrss"))
    return Usage(wall_s, cpu_s, rss_kib * 1024 if rss_kib is not None else None)


def _key_values(text: str) -> dict[str, str]:
    pairs = (word.partition("=") for word in text.split())
    return {key: value for key, sep, value in pairs if sep}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _epoch(stamps: dict[str, str], boot_time: float | None) -> float | None:
    uptime = _float(stamps.get("uptime"))
    if uptime is not None and boot_time is not None:
        return boot_time + uptime
    return _float(stamps.get("time"))


def wrapper_exit(
    code: int,
    reason: str | None = None,
    *,
    ended_at: float | None = None,
    usage: Usage | None = None,
) -> ExitStatus:
    """The status of an attempt whose wrapper recorded exit ``code``. 128+N (N <= 64) is
    reported as ``ExitStatus(code=128+N, signal=N)``: sh cannot tell a job killed by signal N
    from one that chose to exit 128+N, so both are kept."""
    signum = code - 128 if 128 < code <= 128 + _MAX_SIGNAL else None
    return ExitStatus(code, signum, reason, ended_at, usage)


def exit_status(record: StatusRecord) -> ExitStatus:
    """How an attempt ended, from its status record: its exit code, or, without an exit
    record (the process that should have written it died), ``code=None, reason="lost"``."""
    if record.exit_code is not None:
        return wrapper_exit(record.exit_code, ended_at=record.ended_at, usage=record.usage)
    return ExitStatus(code=None, reason="lost")


def check_outputs(patterns: Iterable[str]) -> list[str]:
    """Output globs must stay inside the run dir."""
    bad = [p for p in patterns if p.startswith("/") or ".." in PurePosixPath(p).parts or not p]
    return [f"output pattern {p!r} must be relative and stay in the run dir" for p in bad]


@dataclass(frozen=True, slots=True)
class HostHealth:
    """Whether a host takes work now, and why not. ``state`` is one of "ok", "connecting",
    "unreachable"."""

    state: str = "ok"
    reason: str | None = None


# The scheduler's ears on an executor: (handle, "pending" or "running", reason) as a
# queued job's state changes; and a call with no arguments when the host's health changes.
StateListener = Callable[[Handle, str, str | None], None]
HealthListener = Callable[[], None]
# What an attempt used (and was given), learnt after it ended: a batch system's accounting.
UsageListener = Callable[[Handle, Usage, Request | None], None]


class Executor(Protocol):
    """One backend. Implementations must be safe to call from many tasks at once.

    Constructed as ``cls.create(host, executors)``: ``host`` is the `HostSpec`,
    ``executors`` the ones built before it (a Slurm host reaches its cluster through the
    ssh host it names)."""

    async def start(self, launch: Launch) -> Handle:
        """Create the run directory, place wrapper and script, start the job detached."""
        ...

    async def wait(self, handle: Handle) -> ExitStatus:
        """Return when the attempt has ended; never raises for a job that failed."""
        ...

    async def signal(self, handle: Handle, signum: int) -> None:
        """Send ``signum`` to the attempt's whole process group; no error if it is gone."""
        ...

    async def read_log(self, handle: Handle, offset: int) -> bytes:
        """The log's bytes from ``offset`` on (empty if nothing new)."""
        ...

    async def read_file(self, handle: Handle, name: str, limit: int) -> bytes:
        """Up to ``limit`` bytes of the file ``name`` in the attempt's run dir (empty if
        there is none): how a job's results come back from its host."""
        ...

    async def reattach(self, launch: Launch) -> Handle | None:
        """Find an attempt started by an earlier daemon. None if it never started (and it
        is then guaranteed never to start, so the caller may launch it afresh)."""
        ...

    def health(self) -> HostHealth:
        """Whether the host takes new jobs now; the scheduler dispatches only if "ok"."""
        ...

    def listen(self, on_state: StateListener, on_health: HealthListener) -> None:
        """Register the scheduler's callbacks (called at most once, before any start)."""
        ...

    async def close(self) -> None:
        """Release connections; running jobs keep running."""
        ...


class ExecutorFactory(Protocol):
    """A backend's class: ``create(host, executors)`` builds the executor of ``host``, given
    those built before it (a Slurm host reaches its cluster through the ssh host it names)."""

    def create(self, host: HostSpec, executors: Mapping[str, object]) -> Executor: ...


@runtime_checkable
class RemoteHost(Protocol):
    """What a Slurm host needs of the ssh host it reaches its cluster through: its shell,
    and whether it is up."""

    @property
    def shell(self) -> Shell: ...

    def health(self) -> HostHealth: ...


@runtime_checkable
class ReportsUsage(Protocol):
    """A backend whose figures of what an attempt used may come after its end (Slurm: sacct
    has them once the job is accounted for); others put them in the `ExitStatus`."""

    def listen_usage(self, on_usage: UsageListener) -> None: ...

    async def usage_settled(self, timeout_s: float) -> None:
        """Return once every ended attempt's figures are told (or after ``timeout_s``)."""
        ...


# Backends by host type, imported lazily so that e.g. asyncssh loads only when used.
BACKENDS: dict[str, str] = {
    "local": "ccd.executors.local:LocalExecutor",
    "ssh": "ccd.executors.ssh:SshExecutor",
    "slurm": "ccd.executors.slurm:SlurmExecutor",
}


def backend_class(host_type: str) -> ExecutorFactory:
    """The executor class for a host type, imported on first use."""
    module_name, _, class_name = BACKENDS[host_type].partition(":")
    factory: ExecutorFactory = getattr(importlib.import_module(module_name), class_name)
    return factory
