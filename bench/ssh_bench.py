#!/usr/bin/env python3
"""How fast ccd runs trivial jobs on an SSH host, next to one `ssh host true` per job.

In one run, against one loopback OpenSSH sshd:

- **ccd**: `ccd.engine.Engine` (real SQLite store, fresh temp state dir) running N jobs
  `run: true` on an ssh host, timed from just before `submit()` to `wait()` returning; the
  connection is opened inside the timed span (the scheduler asks the host's health first);
- **floor**: N `conn.run("true")` over one already-open asyncssh connection, as many at once
  as ccd allows itself channels (max_sessions - 1): the cost of one remote command each,
  with no state, no wrapper and no status file;
- **baseline**: N `ssh -i KEY -p PORT ... true` processes, one new connection each, run
  `--baseline-concurrency` at a time (1 = sequential; a list gives one row per value).

Connections are counted from sshd's own log (`Accepted publickey` lines written during each
runner's span), session channels likewise (`Starting session`).

This is a benchmark, not a test: it prints figures and compares them with the issue's
targets (ccd >= 20x faster than the sequential baseline, < 15 ms ccd overhead per job over
the floor, 1 connection for the whole ccd run); it asserts nothing. From the repository root:

    python bench/ssh_bench.py                          # brings up sshd on :2250 itself
    python bench/ssh_bench.py --jobs 500 --baseline-concurrency 1,8
    python bench/ssh_bench.py --sshd-env /tmp/ccd-sshd/env.sh   # an sshd already up
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncssh

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ccd import logs  # noqa: E402
from ccd.engine import Engine, Limits  # noqa: E402
from ccd.executors.ssh import SshExecutor  # noqa: E402
from ccd.spec import HostSpec, JobSpec, WorkflowSpec  # noqa: E402
from ccd.spec.hosts import SshOptions  # noqa: E402

SPEEDUP_TARGET = 20.0
OVERHEAD_TARGET_MS = 15.0
CONNECTIONS_TARGET = 1
DEFAULT_SSHD_DIR = Path("/tmp/ccd-sshd-bench")
DEFAULT_SSHD_PORT = 2250
_ACCEPTED = re.compile(rb"Accepted publickey for (\S+) from")
_SESSION = re.compile(rb"Starting session: .* for (\S+) from")


@dataclass(frozen=True, slots=True)
class Sshd:
    host: str
    port: int
    user: str
    key: str
    known_hosts: str
    log: Path

    def options(self, root: str) -> SshOptions:
        return SshOptions(self.host, self.port, self.user, self.key, self.known_hosts, root=root)

    def offset(self) -> int:
        return self.log.stat().st_size

    def count(self, offset: int) -> tuple[int, int]:
        """(connections, session channels) our user opened since ``offset``."""
        with self.log.open("rb") as f:
            f.seek(offset)
            text = f.read()
        user = self.user.encode()
        return (
            sum(u == user for u in _ACCEPTED.findall(text)),
            sum(u == user for u in _SESSION.findall(text)),
        )


@dataclass(frozen=True, slots=True)
class Row:
    runner: str
    jobs: int
    total_s: float
    connections: int
    sessions: int

    @property
    def ms_per_job(self) -> float:
        return self.total_s / self.jobs * 1000


# -- runners ------------------------------------------------------------------------------


async def run_ccd(sshd: Sshd, jobs: int, max_jobs: int) -> Row:
    root = f"~/ccd-bench-runs/{uuid.uuid4().hex[:10]}"
    lab = HostSpec("lab", "ssh", max_jobs, sshd.options(root))
    hosts = {"local": HostSpec("local", "local"), "lab": lab}
    with tempfile.TemporaryDirectory(prefix="ccd-ssh-bench-") as tmp:
        base = Path(tmp)
        specs = {f"j{i}": JobSpec(f"j{i}", "shell", run="true", host="lab") for i in range(jobs)}
        spec = WorkflowSpec("ssh-bench", base / "wf.yaml", base, specs, hosts)
        offset = sshd.offset()
        engine = await Engine.open(base / "state", hosts, Limits(progress_interval_s=1.0))
        try:
            started = time.perf_counter()
            wf_id = await engine.scheduler.submit(spec)
            state = await engine.scheduler.wait(wf_id)
            elapsed = time.perf_counter() - started
        finally:
            await engine.close()
        if state != "succeeded":
            raise RuntimeError(f"the ccd run ended {state}")
        connections, sessions = sshd.count(offset)
    await _remove_remote(sshd, root)
    return Row("ccd", jobs, elapsed, connections, sessions)


async def run_floor(sshd: Sshd, jobs: int) -> Row:
    opts = sshd.options("~")
    offset = sshd.offset()
    conn = await asyncssh.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.user,
        client_keys=[sshd.key],
        known_hosts=sshd.known_hosts,
    )
    slots = asyncio.Semaphore(max(1, opts.max_sessions - 1))

    async def one() -> None:
        async with slots:
            result = await conn.run("true")
            if result.exit_status != 0:
                raise RuntimeError(f"true exited {result.exit_status}")

    try:
        started = time.perf_counter()  # connected already: the floor is the commands alone
        await asyncio.gather(*(one() for _ in range(jobs)))
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
        await conn.wait_closed()
    return Row("floor (asyncssh run)", jobs, elapsed, *sshd.count(offset))


async def run_baseline(sshd: Sshd, jobs: int, concurrency: int) -> Row:
    argv = [
        "ssh",
        "-i",
        sshd.key,
        "-p",
        str(sshd.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={sshd.known_hosts}",
        "-o",
        "LogLevel=ERROR",
        f"{sshd.user}@{sshd.host}",
        "true",
    ]
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL)
            if await proc.wait() != 0:
                raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}")

    offset = sshd.offset()
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(jobs)))
    elapsed = time.perf_counter() - started
    return Row(f"baseline ssh x{concurrency}", jobs, elapsed, *sshd.count(offset))


async def _remove_remote(sshd: Sshd, root: str) -> None:
    executor = SshExecutor("cleanup", sshd.options("~"))
    try:
        argv = ["sh", "-c", 'rm -rf -- "$HOME/$1"', "sh", root.removeprefix("~/")]
        await executor.shell.run(argv)
    finally:
        await executor.close()


# -- sshd -----------------------------------------------------------------------------------


def sshd_from_env(path: Path) -> Sshd:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = shlex.split(value)[0] if value else ""
    return Sshd(
        values["CCD_SSH_HOST"],
        int(values["CCD_SSH_PORT"]),
        values["CCD_SSH_USER"],
        values["CCD_SSH_KEY"],
        values["CCD_SSH_KNOWN_HOSTS"],
        Path(values["CCD_SSH_LOG"]),
    )


def sshd_script(name: str, directory: Path, port: int) -> None:
    env = dict(os.environ, SSHD_UP_PORT=str(port))
    subprocess.run(
        ["bash", str(REPO / "scripts" / "infra" / name), str(directory)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        check=True,
        start_new_session=True,
    )


# -- report ---------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    sequential = next((r for r in rows if r.runner == "baseline ssh x1"), None)
    header = ("runner", "jobs", "total s", "ms/job", "vs baseline x1", "connections", "sessions")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        speedup = f"{sequential.ms_per_job / row.ms_per_job:.1f}x" if sequential else "-"
        cells = (
            row.runner,
            str(row.jobs),
            f"{row.total_s:.2f}",
            f"{row.ms_per_job:.2f}",
            speedup,
            str(row.connections),
            str(row.sessions),
        )
        print("| " + " | ".join(cells) + " |")


def print_verdict(rows: list[Row]) -> None:
    ccd = next(r for r in rows if r.runner == "ccd")
    floor = next(r for r in rows if r.runner.startswith("floor"))
    sequential = next((r for r in rows if r.runner == "baseline ssh x1"), None)
    overhead = ccd.ms_per_job - floor.ms_per_job
    print()
    if sequential is not None:
        speedup = sequential.ms_per_job / ccd.ms_per_job
        print(
            f"speedup over one ssh process per job: {speedup:.1f}x "
            f"(target >= {SPEEDUP_TARGET:.0f}x: {_ok(speedup >= SPEEDUP_TARGET)})"
        )
    print(
        f"ccd per job, all in: {ccd.ms_per_job:.2f} ms; over the asyncssh floor: "
        f"{overhead:+.2f} ms (target < {OVERHEAD_TARGET_MS:.0f} ms: "
        f"{_ok(ccd.ms_per_job < OVERHEAD_TARGET_MS)})"
    )
    print(
        f"connections during the ccd run: {ccd.connections} "
        f"(target {CONNECTIONS_TARGET}: {_ok(ccd.connections == CONNECTIONS_TARGET)}); "
        f"session channels: {ccd.sessions} for {ccd.jobs} jobs"
    )


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


async def bench(args: argparse.Namespace, sshd: Sshd) -> list[Row]:
    rows = [await run_ccd(sshd, args.jobs, args.max_jobs), await run_floor(sshd, args.jobs)]
    for concurrency in args.baseline_concurrency:
        rows.append(await run_baseline(sshd, args.baseline_jobs or args.jobs, concurrency))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per runner (500)")
    parser.add_argument(
        "--max-jobs", type=int, default=100, help="the ssh host's max_jobs in ccd (100)"
    )
    parser.add_argument(
        "--baseline-jobs",
        type=int,
        default=None,
        help="ssh processes in the baseline (default: --jobs)",
    )
    parser.add_argument(
        "--baseline-concurrency",
        default="1",
        type=lambda s: [int(x) for x in s.split(",")],
        help="ssh processes at once, comma list: one row each (1)",
    )
    parser.add_argument(
        "--sshd-env",
        type=Path,
        default=None,
        help="env.sh of an sshd-up.sh sshd (default: start one)",
    )
    parser.add_argument("--sshd-port", type=int, default=DEFAULT_SSHD_PORT)
    parser.add_argument("--keep-sshd", action="store_true", help="leave the sshd it started")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(None, console=sys.stderr, level=logging.WARNING)
    if shutil.which("ssh") is None:
        print("ssh (the OpenSSH client) is needed for the baseline", file=sys.stderr)
        return 2
    started_sshd = args.sshd_env is None
    env = args.sshd_env or DEFAULT_SSHD_DIR / "env.sh"
    if started_sshd:
        sshd_script("sshd-up.sh", DEFAULT_SSHD_DIR, args.sshd_port)
    try:
        sshd = sshd_from_env(env)
        print(
            f"sshd {sshd.user}@{sshd.host}:{sshd.port}; {os.cpu_count()} CPUs; "
            f"{args.jobs} jobs `true` each\n"
        )
        rows = asyncio.run(bench(args, sshd))
    finally:
        if started_sshd and not args.keep_sshd:
            sshd_script("sshd-down.sh", DEFAULT_SSHD_DIR, args.sshd_port)
    print_table(rows)
    print_verdict(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
