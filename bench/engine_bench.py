#!/usr/bin/env python3
"""How fast the ccd engine runs DAGs of `true` jobs, next to the floors and the bar.

In one run, on the same DAGs and with the same concurrency C (default: the CPU count):

- **engine**: `ccd.engine.Engine` with its real SQLite store in a fresh temp state dir, timed
  from just before `submit()` to `wait()` returning (storing the workflow included);
- **bare**: an asyncio fork/exec dispatcher with in-degree counters and no state at all,
  spawning `/bin/true` with `os.posix_spawn`, learning of exits through `os.pidfd_open` +
  `loop.add_reader` and reaping with `os.waitpid` (the floor of starting processes);
- **floor**: the engine's durable work without its layers (`DurableFloor`): the same commits
  with the store's own writer, the same shepherd, the same run directories, but a blocking
  loop in one thread (the floor of durable state);
- **make**: GNU `make -jC` on a generated Makefile of phony targets whose recipe is `@true`;
- **asyncio**: the same counters on asyncio's own subprocess API (`create_subprocess_exec`,
  `Process.wait`): what a hand-written Python dispatcher costs, for context.

Then what dynamic workflows cost (`bench/dynamic_bench.py`): outputs per job, on the same
chain with and without them; and the submit and expansion times of a 10,000-job sweep.

A separate section writes a 100,000-job layered workflow as YAML and, in a fresh subprocess,
times `ccd.spec.load()` and `submit()` with `Limits(max_jobs=0)` (nothing dispatches), and
reports that process's peak RSS.

This is a benchmark, not a test: it prints figures and compares them with the targets; it
asserts nothing about time. Run from the repository root:

    python bench/engine_bench.py --sizes 100,1000,10000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import dataclasses
import json
import logging
import math
import os
import platform
import pstats
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dynamic_bench  # noqa: E402
from ccd import logs  # noqa: E402
from ccd.engine import Engine, Limits  # noqa: E402
from ccd.engine.launch import launch_for  # noqa: E402
from ccd.engine.store import PRAGMAS, AttemptRecord, Batch, Transition, commit_batch  # noqa: E402
from ccd.executors import shepherd  # noqa: E402
from ccd.executors.local import spawn_request  # noqa: E402
from ccd.executors.procfs import proc_stat_fields  # noqa: E402
from ccd.executors.shepherd_link import start_shepherd  # noqa: E402
from ccd.models import JobState  # noqa: E402
from ccd.spec import LOCAL_HOST, HostSpec, JobSpec, WorkflowSpec  # noqa: E402

Dag = dict[str, tuple[str, ...]]  # job -> its parents; keys in a topological order

SHAPES = ("chain", "fan", "layered")
DEFAULT_SIZES = (100, 1000, 10000)
QUICK_SIZES = (100, 1000)
LOAD_JOBS = 100_000
TRUE = shutil.which("true") or "/bin/true"
MAKE = shutil.which("make")

# The targets.
FAN_RATIO_TARGET = 1.5  # fan N=1000: engine/bare
CHAIN_OVERHEAD_TARGET_MS = 3.0  # chain N=1000: (engine - bare) / N
LOAD_TARGET_S = 10.0  # load + submit of 100k jobs
RSS_TARGET_MB = 500.0


class BenchError(RuntimeError):
    """A runner did not complete the DAG (a job failed, make exited non-zero, ...)."""


# -- DAG shapes ---------------------------------------------------------------------------


def _job(i: int) -> str:
    return f"j{i}"


def chain(n: int) -> Dag:
    """Job i needs job i-1."""
    return {_job(i): (_job(i - 1),) if i else () for i in range(n)}


def fan(n: int) -> Dag:
    """N independent jobs (no root and sink: pure dispatch throughput)."""
    return {_job(i): () for i in range(n)}


def layered(n: int) -> Dag:
    """Layers of width ~sqrt(N); each job needs jobs p and p+1 (mod width) of the layer above."""
    width = max(1, math.isqrt(n))
    dag: Dag = {}
    for i in range(n):
        layer, pos = divmod(i, width)
        if layer == 0:
            dag[_job(i)] = ()
            continue
        above = (layer - 1) * width  # only the last layer can be partial: this one is full
        parents = (_job(above + pos), _job(above + (pos + 1) % width))
        dag[_job(i)] = tuple(dict.fromkeys(parents))
    return dag


SHAPE_BUILDERS: dict[str, Callable[[int], Dag]] = {
    "chain": chain,
    "fan": fan,
    "layered": layered,
}


# -- runner 1: the ccd engine -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineTiming:
    total_s: float  # submit() + wait()
    submit_s: float
    cpu: CpuUse


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds of one run: the runner's own process (all its threads), its helper (the
    engine's local shepherd; 0 for the bare dispatcher) and the jobs; None where unknown."""

    own_s: float
    helper_s: float | None
    jobs_s: float | None


PR_SET_CHILD_SUBREAPER = 36
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def adopt_orphans() -> bool:
    """Become the parent of orphaned descendants (Linux): the shepherd forks away from the
    process the engine starts, and only its parent can read how much CPU it and its jobs
    used once it has exited."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def reap_adopted(timeout_s: float = 30.0) -> tuple[float, float] | None:
    """Wait for the adopted shepherd to exit (it does once the engine has closed) and reap it:
    (its own CPU seconds, its children's: the jobs'), read from its zombie's /proc stat.
    None if it did not exit in time or nothing was adopted."""
    found: tuple[float, float] | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return found
        if info is None:
            time.sleep(0.01)  # still exiting; a benchmark may poll
            continue
        own, children = _proc_cpu_s(info.si_pid)
        os.waitpid(info.si_pid, 0)
        prev_own, prev_children = found or (0.0, 0.0)
        found = (prev_own + own, prev_children + children)
    return None


def _proc_cpu_s(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of a process, in seconds, from /proc/PID/stat."""
    fields = proc_stat_fields(pid)
    if fields is None:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])  # fields 14-17
    return (utime + stime) / _CLK_TCK, (cutime + cstime) / _CLK_TCK


def _cpu_s(times: os.times_result) -> tuple[float, float]:
    return times.user + times.system, times.children_user + times.children_system


def _spec(dag: Dag, workdir: Path, name: str = "bench") -> WorkflowSpec:
    jobs = {
        job: JobSpec(name=job, kind="shell", run="true", needs=parents)
        for job, parents in dag.items()
    }
    return WorkflowSpec(
        name=name,
        source=workdir / f"{name}.yaml",
        base_dir=workdir,
        jobs=jobs,
        hosts={LOCAL_HOST: HostSpec(LOCAL_HOST, "local")},
    )


async def _engine_run(dag: Dag, workdir: Path, concurrency: int) -> tuple[float, float]:
    spec = _spec(dag, workdir)
    hosts = {LOCAL_HOST: HostSpec(LOCAL_HOST, "local", max_jobs=concurrency)}
    engine = await Engine.open(workdir / "state", hosts)
    try:
        start = time.perf_counter()
        wf_id = await engine.scheduler.submit(spec)
        submitted = time.perf_counter()
        state = await engine.scheduler.wait(wf_id)
        end = time.perf_counter()
    finally:
        await engine.close()
    if state != "succeeded":
        raise BenchError(f"engine: workflow ended {state}")
    return end - start, submitted - start


def scratch_dir(root: Path, prefix: str) -> Path:
    """A fresh directory under the run's scratch root, removed only when the whole run ends:
    on ext4 without a journal (as here), inodes freed in the last minutes make the next
    ones slow to allocate, so one runner's clean-up would slow down the next runner."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def time_engine(dag: Dag, concurrency: int, root: Path) -> EngineTiming:
    """One engine run; its CPU split needs `adopt_orphans` first (else helper and jobs are
    None). The engine's own figure includes opening and closing it (a few ms)."""
    own_before, children_before = _cpu_s(os.times())
    total_s, submit_s = asyncio.run(_engine_run(dag, scratch_dir(root, "engine-"), concurrency))
    shepherd = reap_adopted()
    own_after, children_after = _cpu_s(os.times())
    helper_s = jobs_s = None
    if shepherd is not None:
        jobs_s = shepherd[1]
        # The rest of our children's CPU: the shepherd itself and the process that started it.
        helper_s = children_after - children_before - jobs_s
    return EngineTiming(total_s, submit_s, CpuUse(own_after - own_before, helper_s, jobs_s))


# -- runner 2: the bare dispatcher (the floor of starting processes) -----------------------

Spawner = Callable[[str], int]  # job name -> pid of the started process


def spawn_true(job: str) -> int:
    return os.posix_spawn(TRUE, [TRUE], os.environ)


def counters(dag: Dag) -> tuple[dict[str, list[str]], dict[str, int], deque[str]]:
    """Each job's children, its count of parents not yet done, and the jobs ready now."""
    children: dict[str, list[str]] = {job: [] for job in dag}
    for job, parents in dag.items():
        for parent in parents:
            children[parent].append(job)
    waiting = {job: len(parents) for job, parents in dag.items()}
    return children, waiting, deque(job for job, count in waiting.items() if count == 0)


class BareDispatcher:
    """In-degree counters and a ready queue; no state. ``spawn`` starts one job."""

    def __init__(
        self, dag: Dag, concurrency: int, loop: asyncio.AbstractEventLoop, spawn: Spawner
    ) -> None:
        self._loop = loop
        self._concurrency = concurrency
        self._spawn_job = spawn
        self._children, self._waiting, self._ready = counters(dag)
        self._running = 0
        self._left = len(dag)
        self.done: asyncio.Future[None] = loop.create_future()

    def dispatch(self) -> None:
        while self._ready and self._running < self._concurrency:
            self._spawn(self._ready.popleft())

    def _spawn(self, job: str) -> None:
        pid = self._spawn_job(job)
        pidfd = os.pidfd_open(pid)
        self._running += 1
        self._loop.add_reader(pidfd, self._on_exit, job, pid, pidfd)

    def _on_exit(self, job: str, pid: int, pidfd: int) -> None:
        self._loop.remove_reader(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        self._running -= 1
        if os.waitstatus_to_exitcode(status) != 0:
            if not self.done.done():
                self.done.set_exception(BenchError(f"bare: {job} exited {status}"))
            return
        self._left -= 1
        for child in self._children[job]:
            self._waiting[child] -= 1
            if self._waiting[child] == 0:
                self._ready.append(child)
        if self._left == 0:
            self.done.set_result(None)
        else:
            self.dispatch()


async def _bare_run(dag: Dag, concurrency: int, spawn: Spawner) -> float:
    dispatcher = BareDispatcher(dag, concurrency, asyncio.get_running_loop(), spawn)
    start = time.perf_counter()
    dispatcher.dispatch()
    await dispatcher.done
    return time.perf_counter() - start


def time_bare(dag: Dag, concurrency: int) -> tuple[float, CpuUse]:
    own_before, children_before = _cpu_s(os.times())
    wall_s = asyncio.run(_bare_run(dag, concurrency, spawn_true))
    own_after, children_after = _cpu_s(os.times())
    return wall_s, CpuUse(own_after - own_before, 0.0, children_after - children_before)


async def _subprocess_run(dag: Dag, concurrency: int) -> float:
    children, waiting, ready = counters(dag)
    slots = asyncio.Semaphore(concurrency)

    async def run(job: str, jobs: asyncio.TaskGroup) -> None:
        async with slots:
            proc = await asyncio.create_subprocess_exec(TRUE)
            if await proc.wait() != 0:
                raise BenchError(f"asyncio: {job} exited {proc.returncode}")
        for child in children[job]:
            waiting[child] -= 1
            if waiting[child] == 0:
                jobs.create_task(run(child, jobs))

    start = time.perf_counter()
    async with asyncio.TaskGroup() as jobs:
        for job in ready:
            jobs.create_task(run(job, jobs))
    return time.perf_counter() - start


def time_subprocess(dag: Dag, concurrency: int) -> float:
    """One run of the DAG on asyncio's subprocess API: a task per job, a semaphore for C."""
    return asyncio.run(_subprocess_run(dag, concurrency))


# -- runner 3: the durable floor ----------------------------------------------------------


class DurableFloor:
    """The engine's durable work per job, done as plainly as it can be: the same transactions
    (ccd.engine.store's schema and batch writer, with sqlite3 in this thread) committed before a job
    starts and after it ends, and the same local shepherd making the same run directory and
    spawning the same command. No event loop, no database thread, no scheduler: blocking
    reads of the shepherd's answers, in-degree counters and a ready queue.

    Engine - floor is what the engine's own layers cost; floor - bare is what durability
    (the store, the run directories, a parent that outlives a restart) costs."""

    def __init__(
        self,
        spec: WorkflowSpec,
        concurrency: int,
        wf_id: str,
        runs_root: Path,
        db: sqlite3.Connection,
    ) -> None:
        self._jobs = spec.jobs
        self._concurrency = concurrency
        self._wf_id = wf_id
        self._runs_root = runs_root
        self._db = db
        dag = {name: job.needs for name, job in spec.jobs.items()}
        self._children, self._waiting, self._ready = counters(dag)
        self._running: dict[str, AttemptRecord] = {}  # by spawn key
        self._pids: dict[str, int] = {}

    def run(self, sock: socket.socket) -> None:
        answers = sock.makefile("rb")
        left = len(self._jobs)
        batch = Batch()
        requests = self._start_ready(batch)
        while left:
            commit_batch(self._db, batch)  # committed before it is acted on, as the engine does
            for request in requests:
                sock.sendall(shepherd.encode_line(request))
            batch, requests = Batch(), []
            while not batch:
                line = answers.readline()
                if not line:
                    raise BenchError("floor: the shepherd went away")
                message = json.loads(line)
                if message["op"] == "started":
                    self._pids[message["key"]] = message["pid"]
                elif message["op"] == "exited":
                    self._end(message["key"], message["code"], batch)
                    left -= 1
                else:
                    raise BenchError(f"floor: the shepherd answered {message}")
            requests = self._start_ready(batch)
        commit_batch(self._db, batch)

    def _start_ready(self, batch: Batch) -> list[dict[str, object]]:
        requests = []
        while self._ready and len(self._running) < self._concurrency:
            job = self._ready.popleft()
            launch = launch_for(self._jobs[job], self._wf_id, 1, self._runs_root)
            key = f"{self._wf_id}/{job}/1"
            now = time.time()
            batch.transitions.append(
                Transition(
                    self._wf_id, job, JobState.READY, JobState.RUNNING, now, "attempt 1", attempts=1
                )
            )
            record = AttemptRecord(self._wf_id, job, 1, LOCAL_HOST, str(launch.run_dir), now)
            batch.attempts.append(record)
            self._running[key] = record
            requests.append(spawn_request(key, launch, launch.run_dir))
        return requests

    def _end(self, key: str, code: int, batch: Batch) -> None:
        record = self._running.pop(key)
        if code != 0:
            raise BenchError(f"floor: {record.job} exited {code}")
        now = time.time()
        batch.transitions.append(
            Transition(
                self._wf_id, record.job, JobState.RUNNING, JobState.SUCCEEDED, now, exit_code=code
            )
        )
        pid = self._pids.pop(key)
        batch.attempts.append(dataclasses.replace(record, pid=pid, ended_at=now, exit_code=code))
        for child in self._children[record.job]:
            self._waiting[child] -= 1
            if self._waiting[child] == 0:
                batch.transitions.append(
                    Transition(self._wf_id, child, JobState.WAITING, JobState.READY, now)
                )
                self._ready.append(child)


async def _store_workflow(spec: WorkflowSpec, state_dir: Path) -> str:
    """Store the workflow as the engine's submit does (nothing dispatches); its id."""
    engine = await Engine.open(state_dir, spec.hosts, Limits(max_jobs=0))
    try:
        return await engine.scheduler.submit(spec)
    finally:
        await engine.close()


def time_floor(dag: Dag, concurrency: int, root: Path) -> float:
    """One floor run, from the first commit to the last (storing the workflow, about the
    engine's "submit s", is not timed)."""
    workdir = scratch_dir(root, "floor-")
    spec = _spec(dag, workdir)
    state_dir = workdir / "state"
    wf_id = asyncio.run(_store_workflow(spec, state_dir))
    runs_root = state_dir / "runs"
    name = shepherd.socket_name(str(runs_root))
    start_shepherd(name, runs_root)
    db = sqlite3.connect(state_dir / "ccd.db", isolation_level=None)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for pragma in PRAGMAS:
            db.execute(pragma)
        sock.connect(shepherd.address(name))
        start = time.perf_counter()
        DurableFloor(spec, concurrency, wf_id, runs_root, db).run(sock)
        elapsed = time.perf_counter() - start
    finally:
        sock.close()
        db.close()
    reap_adopted()  # the shepherd, gone once we have left: not the next engine run's
    return elapsed


# -- runner 4: GNU make -------------------------------------------------------------------


def makefile_text(dag: Dag) -> str:
    names = " ".join(dag)
    lines = [f".PHONY: all {names}", f"all: {names}"]
    for job, parents in dag.items():
        lines.append(f"{job}: {' '.join(parents)}".rstrip())
        lines.append("\t@true")
    return "\n".join(lines) + "\n"


def time_make(dag: Dag, concurrency: int, root: Path) -> float | None:
    if MAKE is None:
        return None
    tmp = scratch_dir(root, "make-")
    makefile = tmp / "Makefile"
    makefile.write_text(makefile_text(dag))
    argv = [MAKE, f"-j{concurrency}", "-f", str(makefile), "all"]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"make exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


# -- measuring and reporting --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    shape: str
    n: int
    engine_s: float
    submit_s: float
    bare_s: float
    floor_s: float
    make_s: float | None
    subprocess_s: float
    engine_cpu: CpuUse
    bare_cpu: CpuUse

    @property
    def jobs_per_s(self) -> float:
        return self.n / self.engine_s

    @property
    def engine_over_bare(self) -> float:
        return self.engine_s / self.bare_s

    @property
    def overhead_ms(self) -> float:
        return (self.engine_s - self.bare_s) / self.n * 1000


@dataclass(frozen=True, slots=True)
class Runs:
    """What to run besides the engine and bare, and how often."""

    repeat: int
    concurrency: int
    tmp_root: Path


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def measure(shape: str, n: int, runs: Runs) -> Row:
    """Run every runner ``repeat`` times, interleaved so drift hits all alike; medians."""
    dag = SHAPE_BUILDERS[shape](n)
    engine: list[EngineTiming] = []
    bare: list[tuple[float, CpuUse]] = []
    floor: list[float] = []
    make: list[float] = []
    aio: list[float] = []
    for _ in range(runs.repeat):
        engine.append(time_engine(dag, runs.concurrency, runs.tmp_root))
        bare.append(time_bare(dag, runs.concurrency))
        floor.append(time_floor(dag, runs.concurrency, runs.tmp_root))
        made = time_make(dag, runs.concurrency, runs.tmp_root)
        if made is not None:
            make.append(made)
        aio.append(time_subprocess(dag, runs.concurrency))
    return Row(
        shape,
        n,
        statistics.median(t.total_s for t in engine),
        statistics.median(t.submit_s for t in engine),
        statistics.median(wall for wall, _ in bare),
        statistics.median(floor),
        _median(make),
        statistics.median(aio),
        median_cpu([t.cpu for t in engine]),
        median_cpu([cpu for _, cpu in bare]),
    )


def median_cpu(runs: list[CpuUse]) -> CpuUse:
    def part(values: list[float | None]) -> float | None:
        return None if None in values else statistics.median(v for v in values if v is not None)

    return CpuUse(
        statistics.median(r.own_s for r in runs),
        part([r.helper_s for r in runs]),
        part([r.jobs_s for r in runs]),
    )


def _ratio(num: float, den: float | None) -> str:
    return "n/a" if den is None else f"{num / den:.2f}x"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# (header, width, cell)
COLUMNS: tuple[tuple[str, int, Callable[[Row], str]], ...] = (
    ("shape", 8, lambda r: r.shape),
    ("N", 6, lambda r: str(r.n)),
    ("engine s", 9, lambda r: f"{r.engine_s:.3f}"),
    ("submit s", 9, lambda r: f"{r.submit_s:.3f}"),
    ("engine jobs/s", 14, lambda r: f"{r.jobs_per_s:.0f}"),
    ("bare s", 8, lambda r: f"{r.bare_s:.3f}"),
    ("floor s", 8, lambda r: f"{r.floor_s:.3f}"),
    ("make s", 8, lambda r: _secs(r.make_s)),
    ("asyncio s", 10, lambda r: f"{r.subprocess_s:.3f}"),
    ("engine/bare", 12, lambda r: f"{r.engine_over_bare:.2f}x"),
    ("floor/bare", 11, lambda r: f"{r.floor_s / r.bare_s:.2f}x"),
    ("ovh ms/job", 11, lambda r: f"{r.overhead_ms:.2f}"),
    ("engine/make", 12, lambda r: _ratio(r.engine_s, r.make_s)),
    ("engine/asyncio", 15, lambda r: f"{r.engine_s / r.subprocess_s:.2f}x"),
)


def format_line(cells: Sequence[str]) -> str:
    widths = [w for _, w, _ in COLUMNS]
    parts = [
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (w, c) in enumerate(zip(widths, cells, strict=True))
    ]
    return " ".join(parts)


def format_row(row: Row) -> str:
    return format_line([cell(row) for _, _, cell in COLUMNS])


def print_header_row() -> None:
    header = format_line([name for name, _, _ in COLUMNS])
    print(header)
    print("-" * len(header))


def _ms_per_job(seconds: float | None, n: int) -> str:
    return "n/a" if seconds is None else f"{seconds / n * 1000:.2f}"


def cpu_lines(rows: Iterable[Row]) -> list[str]:
    """Where the CPU goes, in ms per job: what the engine spends beyond the bare dispatcher
    (its `extra` column) is, over C jobs in flight and the CPUs there are, the gap in wall
    time."""
    header = (
        f"{'cpu ms/job':<10} {'N':>6} {'engine':>7} {'shepherd':>9} {'jobs':>6}"
        f" {'| bare':>7} {'jobs':>6} {'| extra':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        e, b = r.engine_cpu, r.bare_cpu
        extra = None
        if e.helper_s is not None and e.jobs_s is not None and b.jobs_s is not None:
            extra = (e.own_s + e.helper_s + e.jobs_s) - (b.own_s + b.jobs_s)
        lines.append(
            f"{r.shape:<10} {r.n:>6} {_ms_per_job(e.own_s, r.n):>7}"
            f" {_ms_per_job(e.helper_s, r.n):>9} {_ms_per_job(e.jobs_s, r.n):>6}"
            f" | {_ms_per_job(b.own_s, r.n):>5} {_ms_per_job(b.jobs_s, r.n):>6}"
            f" | {_ms_per_job(extra, r.n):>6}"
        )
    return lines


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def target_lines(rows: Iterable[Row]) -> list[str]:
    by_key = {(r.shape, r.n): r for r in rows}
    lines = ["targets (issue):"]
    fan_row = by_key.get(("fan", 1000))
    if fan_row is None:
        lines.append(f"  fan N=1000 engine/bare <= {FAN_RATIO_TARGET}x: not measured")
    else:
        ratio = fan_row.engine_over_bare
        lines.append(
            f"  fan N=1000 engine/bare = {ratio:.2f}x (target <= {FAN_RATIO_TARGET}x)"
            f"  {_verdict(ratio <= FAN_RATIO_TARGET)}"
        )
        lines.append(
            f"    (durable floor/bare = {fan_row.floor_s / fan_row.bare_s:.2f}x;"
            f" engine/asyncio subprocess API = {fan_row.engine_s / fan_row.subprocess_s:.2f}x)"
        )
    chain_row = by_key.get(("chain", 1000))
    if chain_row is None:
        lines.append(f"  chain N=1000 overhead <= {CHAIN_OVERHEAD_TARGET_MS} ms/job: not measured")
    else:
        ovh = chain_row.overhead_ms
        lines.append(
            f"  chain N=1000 overhead = {ovh:.2f} ms/job (target <= {CHAIN_OVERHEAD_TARGET_MS}"
            f" ms/job)  {_verdict(ovh <= CHAIN_OVERHEAD_TARGET_MS)}"
        )
    return lines


# -- the 100k-job load + submit section ---------------------------------------------------


def workflow_yaml(dag: Dag, name: str) -> str:
    """ccd's own format, written directly (yaml.dump of 100k jobs would dominate)."""
    lines = [f"name: {name}", "jobs:"]
    for job, parents in dag.items():
        needs = f", needs: [{', '.join(parents)}]" if parents else ""
        lines.append(f"  {job}: {{run: 'true'{needs}}}")
    return "\n".join(lines) + "\n"


async def _load_and_submit(path: Path, state_dir: Path) -> dict[str, float]:
    from ccd.spec import load  # here: the loader may not exist while the rest works

    start = time.perf_counter()
    spec = load(path)
    loaded = time.perf_counter()
    engine = await Engine.open(state_dir, spec.hosts, Limits(max_jobs=0))
    try:
        before_submit = time.perf_counter()
        await engine.scheduler.submit(spec)
        submitted = time.perf_counter()
    finally:
        await engine.close()
    return {"jobs": len(spec.jobs), "load_s": loaded - start, "submit_s": submitted - before_submit}


def load_only(path: Path) -> None:
    """The subprocess side: time load + submit, then report them and peak RSS as JSON."""
    with tempfile.TemporaryDirectory(prefix="ccd-bench-load-", dir=path.parent) as tmp:
        result = asyncio.run(_load_and_submit(path, Path(tmp) / "state"))
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def load_section(n_jobs: int, root: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="yaml-", dir=root) as tmp:
        path = Path(tmp) / "load.yaml"
        path.write_text(workflow_yaml(layered(n_jobs), "bench-load"))
        size_mb = path.stat().st_size / 1e6
        argv = [sys.executable, str(Path(__file__).resolve()), "--load-only", str(path)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return [f"load + submit of {n_jobs} jobs: FAILED ({' | '.join(tail)})"]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    total = got["load_s"] + got["submit_s"]
    return [
        f"load + submit, {got['jobs']} jobs, layered, YAML {size_mb:.2f} MB, fresh process:",
        f"  ccd.spec.load  {got['load_s']:7.2f} s",
        f"  submit         {got['submit_s']:7.2f} s   (Limits(max_jobs=0): stores + builds graph)",
        f"  load + submit  {total:7.2f} s   (target < {LOAD_TARGET_S:.0f} s)"
        f"  {_verdict(total < LOAD_TARGET_S)}",
        f"  peak RSS       {got['rss_mb']:7.0f} MB  (target < {RSS_TARGET_MB:.0f} MB)"
        f"  {_verdict(got['rss_mb'] < RSS_TARGET_MB)}",
    ]


# -- profiling one engine run -------------------------------------------------------------


def profile_engine(shape: str, n: int, concurrency: int, root: Path) -> None:
    """cProfile one engine run (main thread only: SQLite work in aiosqlite's thread shows
    as time waiting in the event loop's select)."""
    dag = SHAPE_BUILDERS[shape](n)
    profiler = cProfile.Profile()
    profiler.enable()
    timing = time_engine(dag, concurrency, root)
    profiler.disable()
    print(f"profile of one engine run: {shape} N={n}, {timing.total_s:.3f} s under cProfile")
    stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


# -- command line -------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in _csv(s)],
        help="comma-separated N (default 100,1000,10000)",
    )
    parser.add_argument(
        "--shapes",
        type=_csv,
        default=list(SHAPES),
        help="comma-separated, of: " + ", ".join(SHAPES),
    )
    parser.add_argument("--quick", action="store_true", help="sizes 100,1000 only")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; median shown")
    parser.add_argument(
        "--concurrency",
        "-j",
        type=int,
        default=os.cpu_count() or 1,
        help="jobs in flight for all three (default: CPU count)",
    )
    parser.add_argument(
        "--load-jobs",
        type=int,
        default=LOAD_JOBS,
        help="jobs in the load + submit section (0: skip it)",
    )
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where temp state dirs go (default: the system temp dir)",
    )
    parser.add_argument(
        "--profile",
        metavar="SHAPE:N",
        help="cProfile one engine run of SHAPE:N instead of the table",
    )
    parser.add_argument(
        "--outputs-jobs",
        type=int,
        default=300,
        help="chain length of the outputs cost section (0: skip it)",
    )
    parser.add_argument(
        "--sweep-jobs",
        type=int,
        default=10_000,
        help="combinations of the sweep section (0: skip it)",
    )
    parser.add_argument("--load-only", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    return args


def _fs_type(path: Path) -> str:
    """The file system type of the mount holding ``path`` (from /proc/mounts)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                mount = fields[1]
                if str(path).startswith(mount) and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def print_preamble(args: argparse.Namespace) -> None:
    tmp = (args.tmp_dir or Path(tempfile.gettempdir())).resolve()
    make = "not found"
    if MAKE is not None:
        make = subprocess.run([MAKE, "--version"], capture_output=True, text=True).stdout
        make = make.splitlines()[0] if make else MAKE
    print(
        f"python {platform.python_version()} on {platform.platform()}; "
        f"{os.cpu_count()} CPUs; C = {args.concurrency} jobs in flight"
    )
    print(f"temp/state dirs under {tmp} ({_fs_type(tmp)}); {make}; true = {TRUE}")
    print(f"median of {args.repeat} runs; every job runs `true`; fan = N independent jobs")
    print(f"load average at start: {_loadavg()}")
    print()


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logs.configure(None, console=sys.stderr, level=logging.WARNING)
    if args.load_only is not None:
        load_only(args.load_only)
        return
    root = Path(tempfile.mkdtemp(prefix="ccd-bench-", dir=args.tmp_dir))
    try:
        if args.profile:
            shape, _, n = args.profile.partition(":")
            if shape not in SHAPE_BUILDERS:
                sys.exit(f"--profile: unknown shape {shape!r}; one of {', '.join(SHAPES)}")
            profile_engine(shape, int(n or 1000), args.concurrency, root)
            return
        run_table(args, root)
        if args.load_jobs > 0:
            print()
            print("\n".join(load_section(args.load_jobs, root)), flush=True)
        if args.outputs_jobs or args.sweep_jobs:  # dynamic workflows: bench/dynamic_bench.py
            print()
            lines = dynamic_bench.sections(args.outputs_jobs, args.sweep_jobs, args.repeat, root)
            print("\n".join(lines), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_table(args: argparse.Namespace, root: Path) -> None:
    if not adopt_orphans():
        print("(cannot adopt the shepherd: the CPU table shows only the engine's own process)")
    print_preamble(args)
    print_header_row()
    runs = Runs(args.repeat, args.concurrency, root)
    rows = []
    for shape in args.shapes:
        for n in args.sizes:
            row = measure(shape, n, runs)
            rows.append(row)
            print(format_row(row), flush=True)
    print()
    print("\n".join(cpu_lines(rows)))
    print()
    print(f"load average at end of table: {_loadavg()}")
    print("\n".join(target_lines(rows)))


if __name__ == "__main__":
    main()
