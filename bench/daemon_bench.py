#!/usr/bin/env python3
"""How the ccd daemon and its client feel: latency, idle cost, and throughput vs `ccctl run`.

Starts a real daemon (``python -m ccd --state-dir D --socket S``) in a temp dir, runs one
small workflow to warm it up, then measures:

1. ``ccctl status <id> --json`` and ``ccctl ping`` as whole processes (Python start-up
   included; median (min-max) wall time, and median CPU time), next to ``python -c pass``
   (the floor) and ``python -c 'import cli.main'`` (start-up + the CLI's imports, no
   request);
2. the idle daemon's CPU (utime + stime from /proc/PID/stat over an idle window, no workflow
   running) as % of one core, its wake-ups, and its RSS (VmRSS);
3. submit-to-first-job-start latency: a 1-job workflow whose job writes ``date +%s.%N``;
   latency = that timestamp - the time just before ``Client.submit()``;
4. the engine benchmark's DAGs (``bench/engine_bench.py``; jobs ``run: 'true'``) as whole
   commands: ``ccctl submit FILE --wait --json`` through the daemon vs ``ccctl run FILE
   --state-dir FRESH --json`` in-process.

This is a benchmark, not a test: it prints figures and compares them with the targets; it
asserts nothing about time. The daemon is stopped at exit (SIGTERM, then SIGKILL). Run from
the repository root:

    python bench/daemon_bench.py            # N=20, 60 s idle, sizes 1000
    python bench/daemon_bench.py --quick    # N=5, 10 s idle, sizes 200
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from engine_bench import SHAPE_BUILDERS, SHAPES, workflow_yaml  # noqa: E402

from ccd.client import TERMINAL_STATES, Client, DaemonNotRunning  # noqa: E402

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# The targets.
CLI_TARGET_MS = 150.0  # ccctl status / ping, whole process
IDLE_CPU_TARGET_PCT = 0.1  # "~0%": under 0.1% of one core (60 ms of CPU a minute)
RSS_TARGET_MB = 80.0
DAEMON_RATIO_TARGET = 1.2  # ccctl submit --wait / ccctl run


class BenchError(RuntimeError):
    """Something the benchmark relies on did not work (the daemon died, a job failed...)."""


# -- the daemon ---------------------------------------------------------------------------


class Daemon:
    """A ``python -m ccd`` process in ``root``; ``stop()`` always leaves it dead."""

    def __init__(self, root: Path, extra_args: Sequence[str] = ()) -> None:
        self.extra_args = list(extra_args)  # e.g. --http 127.0.0.1:0
        self.state_dir = root / "state"
        sock_dir = root / "run"
        sock_dir.mkdir(mode=0o700)
        sock_dir.chmod(0o700)  # whatever the umask
        self.socket = sock_dir / "ccd.sock"
        self.stderr_path = root / "ccd.stderr"
        self.client = Client(self.socket, timeout_s=30)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> float:
        """Start it and wait until /health answers; the seconds that took."""
        argv = [PY, "-m", "ccd", "--state-dir", str(self.state_dir), "--socket", str(self.socket)]
        argv += self.extra_args
        begin = time.perf_counter()
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._healthy():
            if time.monotonic() > deadline:
                raise BenchError(f"the daemon did not answer within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.005)
        return time.perf_counter() - begin

    def _healthy(self) -> bool:
        self.check_alive()
        try:
            return bool(self.client.health()["status"] == "ok")
        except (DaemonNotRunning, OSError):
            return False

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.stderr_path.read_text(errors="replace").strip()[-2000:]
            raise BenchError(f"ccd exited {self.proc.returncode}: {tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)

    def ccctl(self, *args: str) -> list[str]:
        return [PY, "-m", "cli", "--socket", str(self.socket), *args]

    def run_workflow(self, path: Path, timeout_s: float = 300.0) -> str:
        """Submit ``path`` and poll until it ends (no event stream); its id."""
        wf_id = self.client.submit(path)
        self.wait_polling(wf_id, timeout_s)
        return wf_id

    def wait_polling(self, wf_id: str, timeout_s: float = 300.0, every_s: float = 0.02) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.client.status(wf_id)["workflow"]["state"]
            if state in TERMINAL_STATES:
                if state != "succeeded":
                    raise BenchError(f"workflow {wf_id} ended {state}")
                return
            if time.monotonic() > deadline:
                raise BenchError(f"workflow {wf_id} still {state} after {timeout_s:.0f} s")
            self.check_alive()
            time.sleep(every_s)


# -- /proc ----------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (all its threads; not its children), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is field 3
    return int(fields[11]) + int(fields[12])  # fields 14 and 15


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over every thread: wake-ups."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return vol, invol


def thread_count(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())


# -- figures --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: str
    target: str = "-"
    ok: bool | None = None  # None: informational, no target


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def ms(self) -> str:
        return f"{self.median * 1e3:.0f} ms ({self.low * 1e3:.0f}-{self.high * 1e3:.0f})"


def time_command(argv: list[str], timeout_s: float = 120.0) -> tuple[float, float, str]:
    """Wall time and CPU time (user + sys) of ``argv`` as a whole process (exit 0 required),
    and its stdout. CPU time is less sensitive than wall time to other load on the machine."""
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    elapsed = time.perf_counter() - begin
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(argv[:6])}... exited {done.returncode}: {done.stderr.strip()[-800:]}"
        )
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return elapsed, cpu, done.stdout


def cli_latency(daemon: Daemon, wf_id: str, runs: int) -> list[Figure]:
    """Figure 1: whole-process round trips, interleaved so drift hits all alike."""
    commands: dict[str, list[str]] = {
        "python -c pass (floor)": [PY, "-c", "pass"],
        "python -c 'import cli.main' (no request)": [PY, "-c", "import cli.main"],
        "ccctl ping": daemon.ccctl("ping"),
        "ccctl status <id> --json": daemon.ccctl("status", wf_id, "--json"),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():  # one untimed run each: page cache, .pyc files
        time_command(argv)
    for _ in range(runs):
        for name, argv in commands.items():
            elapsed, cpu_s, _ = time_command(argv)
            times[name].append(elapsed)
            cpu[name].append(cpu_s)
    figures = []
    for name, values in times.items():
        spread = Spread.of(values)
        value = f"{spread.ms()}; cpu {statistics.median(cpu[name]) * 1e3:.0f} ms"
        if name.startswith("ccctl"):
            ok = spread.median * 1e3 < CLI_TARGET_MS
            target = f"< {CLI_TARGET_MS:.0f} ms"
            figures.append(Figure(f"{name}, N={runs}", value, target, ok))
        else:
            figures.append(Figure(f"{name}, N={runs}", value))
    return figures


def idle_cost(daemon: Daemon, idle_s: float) -> list[Figure]:
    """Figure 2: CPU and wake-ups over an idle window, then RSS."""
    running = daemon.client.health().get("jobs_running")
    if running:
        raise BenchError(f"the daemon is not idle: {running} jobs running")
    pid = daemon.pid
    ticks0, switches0, t0 = cpu_ticks(pid), context_switches(pid), time.monotonic()
    time.sleep(idle_s)
    ticks1, switches1, t1 = cpu_ticks(pid), context_switches(pid), time.monotonic()
    daemon.check_alive()
    elapsed = t1 - t0
    cpu_s = (ticks1 - ticks0) / CLK_TCK
    pct = cpu_s / elapsed * 100
    wakeups = (switches1[0] - switches0[0]) / elapsed
    rss_mb = status_kb(pid, "VmRSS") / 1024
    return [
        Figure(
            f"idle daemon CPU over {elapsed:.0f} s",
            f"{pct:.3f}% ({cpu_s * 1e3:.0f} ms CPU)",
            f"~0% (< {IDLE_CPU_TARGET_PCT}%)",
            pct < IDLE_CPU_TARGET_PCT,
        ),
        Figure(
            "idle daemon wake-ups (voluntary ctx switches)",
            f"{wakeups:.2f}/s, {thread_count(pid)} threads",
        ),
        Figure(
            "daemon RSS (VmRSS), warm, idle",
            f"{rss_mb:.1f} MB",
            f"< {RSS_TARGET_MB:.0f} MB",
            rss_mb < RSS_TARGET_MB,
        ),
    ]


def first_job_latency(daemon: Daemon, work: Path, runs: int) -> list[Figure]:
    """Figure 3: time just before submit() -> the job's own `date +%s.%N`."""
    latencies: list[float] = []
    submit_calls: list[float] = []
    for i in range(runs):
        stamp = work / f"stamp-{i}"
        wf = work / f"latency-{i}.yaml"
        wf.write_text(f"name: latency-{i}\njobs:\n  stamp: {{run: 'date +%s.%N > {stamp}'}}\n")
        before = time.time()
        begin = time.perf_counter()
        wf_id = daemon.client.submit(wf)
        submit_calls.append(time.perf_counter() - begin)
        daemon.wait_polling(wf_id)  # so the next one starts on an idle daemon
        latencies.append(float(stamp.read_text().strip()) - before)
    return [
        Figure(f"submit -> first job start, N={runs}", Spread.of(latencies).ms()),
        Figure(f"  of which Client.submit() call, N={runs}", Spread.of(submit_calls).ms()),
    ]


@dataclass(frozen=True, slots=True)
class Comparison:
    shape: str
    n: int
    daemon_s: float
    run_s: float

    @property
    def ratio(self) -> float:
        return self.daemon_s / self.run_s


def daemon_vs_run(daemon: Daemon, work: Path, shape: str, n: int, repeat: int) -> Comparison:
    """Figure 4: the same YAML through `ccctl submit --wait` and `ccctl run`, whole commands,
    alternating which goes first; medians."""
    wf = work / f"{shape}-{n}.yaml"
    wf.write_text(workflow_yaml(SHAPE_BUILDERS[shape](n), f"bench-{shape}-{n}"))
    timeout_s = 60 + n * 0.5
    via_daemon: list[float] = []
    in_process: list[float] = []

    def submit_wait() -> None:
        argv = daemon.ccctl("submit", str(wf), "--wait", "--json")
        elapsed, _, out = time_command(argv, timeout_s)
        _check_succeeded(out, "ccctl submit --wait")
        via_daemon.append(elapsed)

    def run(index: int) -> None:
        state_dir = work / f"run-state-{shape}-{n}-{index}"
        argv = [PY, "-m", "cli", "run", str(wf), "--state-dir", str(state_dir), "--json"]
        elapsed, _, out = time_command(argv, timeout_s)
        shutil.rmtree(state_dir, ignore_errors=True)
        _check_succeeded(out, "ccctl run")
        in_process.append(elapsed)

    for index in range(repeat):
        order: list[Callable[[], None]] = [submit_wait, functools.partial(run, index)]
        for step in order if index % 2 == 0 else reversed(order):
            step()
    return Comparison(shape, n, statistics.median(via_daemon), statistics.median(in_process))


def _check_succeeded(stdout: str, what: str) -> None:
    status: dict[str, Any] = json.loads(stdout)
    state = status["workflow"]["state"]
    if state != "succeeded":
        raise BenchError(f"{what}: workflow ended {state}")


# -- output ---------------------------------------------------------------------------------

COLUMNS = (("figure", 50), ("value", 40), ("target", 18), ("ok?", 6))


def print_table(figures: Sequence[Figure]) -> None:
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip()

    header = line([name for name, _ in COLUMNS])
    print(header)
    print("-" * len(header))
    for f in figures:
        verdict = "-" if f.ok is None else ("ok" if f.ok else "MISSED")
        print(line([f.name, f.value, f.target, verdict]))


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_preamble(args: argparse.Namespace, tmp: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    print(f"python {platform.python_version()} ({PY}) on {platform.platform()}")
    print(f"nproc {affinity} (os.cpu_count {os.cpu_count()}); load average at start: {loadavg()}")
    print(f"temp dir {tmp}; N={args.runs} runs per latency figure; idle window {args.idle_s:g} s;")
    print(
        f"daemon vs run: shapes {','.join(args.shapes)}, sizes "
        f"{','.join(map(str, args.sizes))}, median of {args.repeat}"
    )
    print(flush=True)


# -- command line ---------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="N=5, 10 s idle, sizes 200, 1 repeat (unless given)"
    )
    parser.add_argument("--runs", type=int, help="runs per latency figure (default 20)")
    parser.add_argument("--idle-s", type=float, help="idle window in seconds (default 60)")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in _csv(s)],
        help="comma-separated N for daemon vs run (default 1000)",
    )
    parser.add_argument(
        "--shapes",
        type=_csv,
        default=list(SHAPES),
        help="comma-separated, of: " + ", ".join(SHAPES),
    )
    parser.add_argument(
        "--repeat", type=int, help="runs per daemon-vs-run figure; median shown (default 3)"
    )
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where the temp dir goes (default: the system temp dir)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    quick = args.quick
    args.runs = args.runs or (5 if quick else 20)
    args.idle_s = args.idle_s if args.idle_s is not None else (10.0 if quick else 60.0)
    args.sizes = args.sizes or ([200] if quick else [1000])
    args.repeat = args.repeat or (1 if quick else 3)
    return args


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that the finally below stops the daemon


def bench(args: argparse.Namespace, root: Path) -> list[Figure]:
    daemon = Daemon(root)
    work = root / "work"
    work.mkdir()
    try:
        started_s = daemon.start()
        health = daemon.client.health()
        print(
            f"ccd {health.get('version')} pid {daemon.pid}: answered /health "
            f"{started_s * 1e3:.0f} ms after exec",
            flush=True,
        )
        warm = work / "warm.yaml"
        warm.write_text("name: warm\njobs:\n  a: {run: 'true'}\n  b: {run: 'true', needs: [a]}\n")
        wf_id = daemon.run_workflow(warm)
        figures = [Figure("daemon start-up (exec -> /health answers)", f"{started_s * 1e3:.0f} ms")]
        print("1. ccctl round trips...", flush=True)
        figures += cli_latency(daemon, wf_id, args.runs)
        print(f"2. idle window of {args.idle_s:g} s...", flush=True)
        figures += idle_cost(daemon, args.idle_s)
        print("3. submit -> first job start...", flush=True)
        figures += first_job_latency(daemon, work, args.runs)
        print("4. ccctl submit --wait vs ccctl run...", flush=True)
        for shape in args.shapes:
            for n in args.sizes:
                c = daemon_vs_run(daemon, work, shape, n, args.repeat)
                figures.append(
                    Figure(
                        f"submit --wait / run, {c.shape} N={c.n}",
                        f"{c.ratio:.2f}x ({c.daemon_s:.2f} s / {c.run_s:.2f} s)",
                        f"<= {DAEMON_RATIO_TARGET}x",
                        c.ratio <= DAEMON_RATIO_TARGET,
                    )
                )
                print(f"   {shape} N={n}: {figures[-1].value}", flush=True)
        rss_mb = status_kb(daemon.pid, "VmRSS") / 1024
        hwm_mb = status_kb(daemon.pid, "VmHWM") / 1024
        figures.append(Figure("daemon RSS at the end (peak)", f"{rss_mb:.1f} MB ({hwm_mb:.1f})"))
        daemon.check_alive()
        return figures
    finally:
        daemon.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="ccd-dbench-", dir=args.tmp_dir) as tmp:
        print_preamble(args, Path(tmp))
        figures = bench(args, Path(tmp))
    print()
    print_table(figures)
    print()
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
