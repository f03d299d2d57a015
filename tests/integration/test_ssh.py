"""The ssh backend against a real OpenSSH sshd (see conftest.py's ``sshd`` fixture).

Jobs run through the real engine (store, scheduler, executors) or the executor directly;
remote effects are checked on the remote side (``ps``, status files) and connections are
counted in sshd's own log. No sleeps wait for state: everything polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ccd.engine import Engine, Limits
from ccd.executors.base import HostHealth, Launch, check_outputs, parse_status
from ccd.executors.ssh import SshConnection, SshExecutor
from ccd.executors.ssh_remote import (
    PollItem,
    launch_script,
    parse_claim,
    parse_launch,
    parse_poll,
    poll_script,
    rel_run_dir,
    resolve_root,
)
from ccd.spec import HostSpec, JobSpec, WorkflowSpec
from cli import render
from tests.conftest import FAST
from tests.helpers import eventually
from tests.integration.conftest import Sshd
from tests.integration.daemon_fixture import DaemonProcess, wait_for

Probe = Callable[..., Awaitable[str]]


# --- helpers ----------------------------------------------------------------------------


def remote_root(sshd: Sshd) -> str:
    return f"{sshd.runs}/{uuid.uuid4().hex[:10]}"


def lab_hosts(sshd: Sshd, max_jobs: int = 50, **options: Any) -> dict[str, HostSpec]:
    opts = sshd.options(root=options.pop("root", remote_root(sshd)), **options)
    return {"local": HostSpec("local", "local"), "lab": HostSpec("lab", "ssh", max_jobs, opts)}


def job(name: str, run: str, **fields: Any) -> JobSpec:
    return JobSpec(name, "shell", run=textwrap.dedent(run), host="lab", **fields)


def spec_of(tmp_path: Path, hosts: dict[str, HostSpec], *jobs: JobSpec) -> WorkflowSpec:
    return WorkflowSpec("t", tmp_path / "wf.yaml", tmp_path, {j.name: j for j in jobs}, hosts)


@pytest.fixture
async def open_engine(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    opened: list[Engine] = []

    async def open_(hosts: dict[str, HostSpec], limits: Limits = FAST) -> Engine:
        engine = await Engine.open(tmp_path / "state", hosts, limits)
        opened.append(engine)
        return engine

    yield open_
    for engine in opened:
        await engine.close()


def lab_of(engine: Engine) -> SshExecutor:
    executor = engine._executors["lab"]
    assert isinstance(executor, SshExecutor)
    return executor


async def run_jobs(engine: Engine, spec: WorkflowSpec) -> dict[str, dict[str, Any]]:
    wf_id = await engine.scheduler.submit(spec)
    await engine.scheduler.wait(wf_id)
    return await job_states(engine, wf_id)


async def job_states(engine: Engine, wf_id: str) -> dict[str, dict[str, Any]]:
    status = (await engine.status(wf_id)).to_json()
    return {j["name"]: j for j in status["jobs"]} | {"": status["workflow"]}


@pytest.fixture
async def probe(sshd: Sshd) -> AsyncIterator[Probe]:
    """Run a shell command on the sshd host over a separate connection; its stdout."""
    executor = SshExecutor("probe", sshd.options())

    async def run(command: str) -> str:
        result = await executor.shell.run(["sh", "-c", command], timeout_s=30)
        return result.stdout.decode()

    yield run
    await executor.close()


async def remote_processes(probe: Probe, marker: str) -> list[str]:
    lines = (await probe("ps -eo pid,pgid,stat,args")).splitlines()
    return [line for line in lines if marker in line and "ps -eo" not in line]


async def log_of(engine: Engine, wf_id: str, name: str) -> str:
    _, data = await engine.read_log(wf_id, name, None, 0)
    return data.decode()


async def remote_file(executor: SshExecutor, wf_id: str, name: str, file: str) -> str:
    path = f"{executor.conn.root}/{wf_id}/{name}/1/{file}"
    return (await executor.shell.read_file(path)).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(tmp_path: Path, job_name: str, text: str, **fields: Any) -> Launch:
    run_dir = tmp_path / "runs" / f"w{uuid.uuid4().hex[:8]}" / job_name / "1"
    return Launch(
        run_dir.parts[-3],
        job_name,
        1,
        run_dir,
        run_dir / "run.sh",
        ("sh", "./run.sh"),
        fields.pop("env", {}),
        inline=textwrap.dedent(text),
        **fields,
    )


# --- pure parts (no sshd needed) ---------------------------------------------------------


def test_poll_output_is_parsed_exactly() -> None:
    output = (
        "ccd-section procs\n"
        "42 (sh) S 1 42 42 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 777 1 2\n"
        "43 (a b) c) Z 1 43 43 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 778 1 2\n"
        "\nccd-section status\n"
        "==> /dev/null <==\n"
        "\n==> w/a/1/status <==\nstart pid=42 ticks=777 host=h uptime=1.0\n"
        "\n==> w/b/1/status <==\nstart pid=43 host=h uptime=1.0\nexit code=3 upt"
        "\nccd-section sizes\n"
        "  12 w/a/1/log\n   0 w/b/1/log\n  12 total\n"
    )
    result = parse_poll(output)
    assert result.alive == {42: 777}  # 43 is a zombie: finished
    assert result.status == {
        "w/a/1": "start pid=42 ticks=777 host=h uptime=1.0\n",
        "w/b/1": "start pid=43 host=h uptime=1.0\nexit code=3 upt",
    }
    assert parse_status(result.status["w/b/1"]).exit_code is None  # a torn write is no exit
    assert result.log_size == {"w/a/1": 12, "w/b/1": 0}
    assert parse_poll("ccd-section status\n==> /dev/null <==\n\nccd-section sizes\n").alive is None


def test_scripts_quote_everything_and_paths_are_validated(tmp_path: Path) -> None:
    from ccd.executors.ssh_remote import RemoteLaunch

    evil = "x'; rm -rf ~; echo '"
    script = launch_script(
        [RemoteLaunch("/r/w/j/1", "run.sh", evil.encode(), ("sh", "./run.sh", evil), {"V": evil})],
        b"#!/bin/sh\necho 'wrapper'\n",
    ).decode()
    assert "rm -rf ~;" not in script.replace("'x'\"'\"'; rm -rf ~; echo '\"'\"''", "")
    assert parse_launch("ccd-launch 0 started 12\nccd-launch 2 exists\n", 3)[1].outcome == "failed"
    assert poll_script("/r", [PollItem("w/j/1", 5)]).count(b"/proc/5/stat") == 1
    assert parse_claim("ccd-claim exists\nstart pid=1\n") == ("exists", "start pid=1\n")
    assert rel_run_dir(tmp_path / "wf1" / "job" / "3") == "wf1/job/3"
    with pytest.raises(Exception, match="cannot map"):
        rel_run_dir(tmp_path / ".." / "job" / "x")
    assert resolve_root("~/.ccd/runs", "/home/u") == "/home/u/.ccd/runs"
    assert resolve_root("runs", "/home/u/") == "/home/u/runs"
    assert check_outputs(["out/*.txt", "../x", "/etc/passwd"]) == [
        "output pattern '../x' must be relative and stay in the run dir",
        "output pattern '/etc/passwd' must be relative and stay in the run dir",
    ]


# --- against sshd ------------------------------------------------------------------------


async def test_success_exit_codes_signals_progress_and_log(
    sshd: Sshd, open_engine: Callable[..., Awaitable[Engine]], tmp_path: Path
) -> None:
    hosts = lab_hosts(sshd)
    spec = spec_of(
        tmp_path,
        hosts,
        job("ok", "echo out-$CCD_JOB-$GREETING; echo err >&2", env={"GREETING": "hi there"}),
        job("exit3", "exit 3"),
        job("killed", "sh -c 'kill -KILL $$'"),
        job("progress", "echo '# ccd progress=40 loading'\necho '# ccd progress=90 nearly'\n"),
    )
    engine = await open_engine(hosts)
    jobs = await run_jobs(engine, spec)
    assert jobs["ok"]["state"] == "succeeded" and jobs["ok"]["exit_code"] == 0
    assert jobs["exit3"]["state"] == "failed" and jobs["exit3"]["exit_code"] == 3
    assert jobs["killed"]["state"] == "failed"
    assert (jobs["killed"]["exit_code"], jobs["killed"]["signal"]) == (137, 9)
    assert jobs["progress"]["state"] == "succeeded" and jobs["progress"]["progress"] == 90
    wf_id = jobs[""]["id"]
    assert (await log_of(engine, wf_id, "ok")).splitlines() == ["out-ok-hi there", "err"]
    assert all(j["host"] == "lab" for name, j in jobs.items() if name)


async def test_inputs_go_up_and_outputs_come_back(sshd: Sshd, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("hello\n")
    executor = SshExecutor("lab", sshd.options(root=remote_root(sshd)))
    try:
        good = launch(
            tmp_path,
            "io",
            "mkdir out; tr a-z A-Z < data.txt > out/upper.txt; wc -c < data.txt"
            " > count.txt; echo skipped > other.log",
            inputs=(data,),
            outputs=("out/*.txt", "count.txt"),
        )
        status = await executor.wait(await executor.start(good))
        assert status.ok, status
        assert (good.run_dir / "out" / "upper.txt").read_text() == "HELLO\n"
        assert (good.run_dir / "count.txt").read_text().strip() == "6"
        assert not (good.run_dir / "other.log").exists()
        missing = launch(tmp_path, "none", "true", outputs=("nothing-*.csv",))
        status = await executor.wait(await executor.start(missing))
        assert not status.ok and status.code == 0
        assert status.reason is not None and status.reason.startswith("outputs not fetched")
        assert status.reason.endswith(": no file matches 'nothing-*.csv'")
    finally:
        await executor.close()


async def test_timeout_kills_the_remote_process_group(
    sshd: Sshd, open_engine: Callable[..., Awaitable[Engine]], tmp_path: Path, probe: Probe
) -> None:
    hosts = lab_hosts(sshd)
    spec = spec_of(tmp_path, hosts, job("slow", "sleep 7301 & sleep 7302; wait", timeout_s=1.0))
    engine = await open_engine(hosts)
    jobs = await run_jobs(engine, spec)
    assert jobs["slow"]["state"] == "failed" and jobs["slow"]["reason"] == "timeout"
    await eventually(lambda: _none_left(probe, "sleep 730"), what="the remote group to die")


async def _none_left(probe: Probe, marker: str) -> bool:
    return not await remote_processes(probe, marker)


async def test_cancel_kills_the_remote_process_group(
    sshd: Sshd, open_engine: Callable[..., Awaitable[Engine]], tmp_path: Path, probe: Probe
) -> None:
    hosts = lab_hosts(sshd)
    spec = spec_of(tmp_path, hosts, job("long", "echo begun; sleep 7311 & sleep 7312; wait"))
    engine = await open_engine(hosts)
    wf_id = await engine.scheduler.submit(spec)
    await eventually(lambda: remote_processes(probe, "sleep 731"), what="the job to run")
    await eventually(lambda: _log_has(engine, wf_id, "long", "begun"), what="its log")
    assert len(await remote_processes(probe, "sleep 731")) == 2
    engine.scheduler.cancel(wf_id, ["long"])
    await engine.scheduler.wait(wf_id)
    assert (await job_states(engine, wf_id))["long"]["state"] == "cancelled"
    await eventually(lambda: _none_left(probe, "sleep 731"), what="the remote group to die")


async def _log_has(engine: Engine, wf_id: str, name: str, text: str) -> bool:
    try:
        return text in await log_of(engine, wf_id, name)
    except Exception:  # no attempt recorded yet
        return False


async def test_200_jobs_share_one_connection(
    sshd: Sshd, open_engine: Callable[..., Awaitable[Engine]], tmp_path: Path
) -> None:
    offset = sshd.log_offset()
    hosts = lab_hosts(sshd, max_jobs=100)
    spec = spec_of(tmp_path, hosts, *(job(f"j{i}", "echo $CCD_JOB") for i in range(200)))
    engine = await open_engine(hosts)
    jobs = await run_jobs(engine, spec)
    assert jobs[""]["state"] == "succeeded"
    assert lab_of(engine).conn.connections == 1
    await engine.close()
    connections = sshd.connections_since(offset)
    sessions = sshd.sessions_since(offset)
    print(f"200 jobs: {len(connections)} connection(s), {len(sessions)} session channels")
    assert len(connections) == 1, connections
    assert set(sessions) == set(connections)  # every channel on that one connection
    assert len(sessions) < 200  # commands are batched: fewer channels than jobs


async def test_cut_connection_mid_job_completes_once(
    sshd: Sshd, open_engine: Callable[..., Awaitable[Engine]], tmp_path: Path
) -> None:
    hosts = lab_hosts(sshd)
    spec = spec_of(tmp_path, hosts, job("a", "echo begun; sleep 2; echo finished"))
    engine = await open_engine(hosts)
    wf_id = await engine.scheduler.submit(spec)
    await eventually(lambda: _log_has(engine, wf_id, "a", "begun"), what="the job to start")
    lab = lab_of(engine)
    assert lab.conn.connections == 1
    for pid in sshd.connection_pids():  # the per-connection sshd processes
        os.kill(pid, signal.SIGKILL)
    await eventually(lambda: lab.conn.connections == 2, what="a reconnection")
    await engine.scheduler.wait(wf_id)
    jobs = await job_states(engine, wf_id)
    assert jobs["a"]["state"] == "succeeded" and jobs["a"]["attempts"] == 1
    status = await remote_file(lab, wf_id, "a", "status")
    assert [line.split()[0] for line in status.splitlines()] == ["start", "exit"]
    assert (await log_of(engine, wf_id, "a")).splitlines() == ["begun", "finished"]


async def test_sshd_down_longer_than_backoff_jobs_wait_then_finish(
    sshd: Sshd,
    open_engine: Callable[..., Awaitable[Engine]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SshConnection, "reconnect_base_s", 0.05)
    monkeypatch.setattr(SshConnection, "reconnect_cap_s", 0.5)
    hosts = lab_hosts(sshd)
    spec = spec_of(
        tmp_path,
        hosts,
        job("a", "echo begun; sleep 1; echo a-done"),
        job("b", "echo b-done", needs=("a",)),
    )
    engine = await open_engine(hosts)
    lab = lab_of(engine)
    changes: list[HostHealth] = []
    scheduler_listener = lab.conn.on_health  # the scheduler's: keep it, and listen too

    def on_health() -> None:
        changes.append(lab.conn.health)
        if scheduler_listener is not None:
            scheduler_listener()

    lab.conn.on_health = on_health
    wf_id = await engine.scheduler.submit(spec)
    await eventually(lambda: _log_has(engine, wf_id, "a", "begun"), what="a to start")
    try:
        sshd.stop()
        health = await eventually(
            lambda: lab.health().state == "unreachable" and lab.health(),
            what="the host to be called unreachable",
        )
        assert "lab" in health.reason and str(sshd.port) in health.reason
        jobs = await job_states(engine, wf_id)
        assert (jobs["a"]["state"], jobs["b"]["state"]) == ("running", "waiting")
        assert jobs[""]["state"] == "running"
    finally:
        sshd.start()
    await engine.scheduler.wait(wf_id)
    jobs = await job_states(engine, wf_id)
    assert jobs[""]["state"] == "succeeded"
    assert jobs["a"]["attempts"] == 1 and jobs["b"]["attempts"] == 1
    assert [h.state for h in changes][-1] == "ok"
    assert "unreachable" in [h.state for h in changes]


@pytest.mark.parametrize("case", ["unknown", "mismatch"])
async def test_unknown_or_wrong_host_key_is_refused_with_a_clear_reason(
    sshd: Sshd, tmp_path: Path, case: str
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    known = tmp_path / "known_hosts_wrong"
    # The right name with another key (the client's own public key stands in for it).
    other_key = " ".join(Path(sshd.key + ".pub").read_text().split()[:2])
    known.write_text(f"[{sshd.host}]:{sshd.port} {other_key}\n")
    chosen = empty if case == "unknown" else known
    executor = SshExecutor("lab", sshd.options(known_hosts=str(chosen)))
    try:
        health = await eventually(
            lambda: executor.health().state == "unreachable" and executor.health(),
            what="a host key verdict",
        )
        assert health.reason is not None
        assert "host key not verified" in health.reason and "'lab'" in health.reason
        assert executor.conn.connections == 0
    finally:
        await executor.close()
    opted_out = SshExecutor(
        "lab", sshd.options(known_hosts=str(empty), insecure_skip_host_key_check=True)
    )
    try:
        await eventually(lambda: opted_out.health().state == "ok", what="the explicit opt-out")
    finally:
        await opted_out.close()


async def test_unreachable_host_gives_a_clear_state_not_a_crash(
    sshd: Sshd,
    open_engine: Callable[..., Awaitable[Engine]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SshConnection, "reconnect_base_s", 0.02)
    monkeypatch.setattr(SshConnection, "reconnect_cap_s", 0.2)
    hosts = lab_hosts(sshd, port=free_port())
    engine = await open_engine(hosts)
    lab = lab_of(engine)
    spec = spec_of(tmp_path, hosts, job("a", "true"))
    wf_id = await engine.scheduler.submit(spec)
    health = await eventually(
        lambda: lab.health().state == "unreachable" and lab.health(),
        what="the host to be called unreachable",
    )
    assert health.reason is not None and "lab" in health.reason
    assert "refused" in health.reason.lower() or "connect call failed" in health.reason.lower()
    jobs = await job_states(engine, wf_id)
    assert jobs["a"]["state"] in ("ready", "running")  # waiting for the host, not failed
    assert jobs[""]["state"] == "running"
    status = (await engine.status(wf_id)).to_json()  # what `ccctl status` shows
    assert status["hosts"]["lab"] == {"state": "unreachable", "reason": health.reason}
    assert f"host lab: unreachable ({health.reason})" in render.summary(status)


async def test_reattach_finds_running_jobs_and_claims_unstarted_ones(
    sshd: Sshd, tmp_path: Path
) -> None:
    root = remote_root(sshd)
    first = SshExecutor("lab", sshd.options(root=root))
    running = launch(tmp_path, "r", "sleep 1; echo once")
    handle = await first.start(running)
    await first.close()  # the daemon goes away; the job does not
    second = SshExecutor("lab", sshd.options(root=root))
    try:
        again = await second.reattach(running)
        assert again is not None and again.pid == handle.pid
        assert (await second.wait(again)).ok
        assert (await second.read_log(again, 0)) == b"once\n"
        never = launch(tmp_path, "n", "echo must-not-run")
        assert await second.reattach(never) is None  # claimed: now it can never start
        assert (await second.wait(await second.start(never))).reason == "lost"
        status = await second.shell.read_file(
            f"{second.conn.root}/{rel_run_dir(never.run_dir)}/status"
        )
        assert status == b"claimed\n"
    finally:
        await second.close()


async def test_shell_runs_commands_and_moves_files(sshd: Sshd) -> None:
    executor = SshExecutor("lab", sshd.options())
    try:
        result = await executor.shell.run(
            ["sh", "-c", "cat; echo $1 >&2; exit 4", "sh", "a b"], stdin=b"in"
        )
        assert (result.returncode, result.stdout, result.stderr) == (4, b"in", b"a b\n")
        path = f"{remote_root(sshd)}/f.txt"
        await executor.shell.write_files({path: b"0123456789"})
        assert await executor.shell.read_file(path, 3, 4) == b"3456"
        assert await executor.shell.read_file(path + ".missing") == b""
        with pytest.raises(TimeoutError):
            await executor.shell.run(["sleep", "5"], timeout_s=0.2)
    finally:
        await executor.close()


# --- the daemon: kill -9 while remote jobs run -------------------------------------------


def test_daemon_kill9_reattaches_remote_jobs_each_ran_once(sshd: Sshd, tmp_path: Path) -> None:
    root = remote_root(sshd)
    config = tmp_path / "ccd.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        hosts:
          lab:
            type: ssh
            hostname: {sshd.host}
            port: {sshd.port}
            user: {sshd.user}
            identity: {sshd.key}
            known_hosts: {sshd.known_hosts}
            root: {root}
            max_jobs: 10
        limits:
          progress_interval_s: 0.1
    """)
    )
    lines = ["jobs:"]
    for i in range(6):
        lines.append(f"  j{i}: {{host: lab, run: 'echo start-$CCD_JOB; sleep 2; echo end'}}")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("\n".join(lines) + "\n")
    daemon = DaemonProcess(tmp_path, config).start()
    try:
        wf_id = daemon.client.submit(workflow)
        wait_for(lambda: _all_running(daemon, wf_id), 30, "every job to run remotely")
        daemon.kill9()
        daemon.start()
        status = daemon.client.wait(wf_id)
    finally:
        daemon.stop()
    assert status["workflow"]["state"] == "succeeded", status
    assert all(j["attempts"] == 1 for j in status["jobs"]), status
    home = Path(f"~{sshd.user}").expanduser()
    for i in range(6):
        run_dir = home / root.removeprefix("~/") / wf_id / f"j{i}" / "1"
        kinds = [line.split()[0] for line in (run_dir / "status").read_text().splitlines()]
        assert kinds == ["start", "exit"], kinds  # started once, ended once
        assert (run_dir / "log").read_text() == f"start-j{i}\nend\n"


def _all_running(daemon: DaemonProcess, wf_id: str) -> bool:
    jobs = daemon.client.status(wf_id)["jobs"]
    if not all(j["state"] == "running" for j in jobs):
        return False
    return all(b"start-" in daemon.client.log(wf_id, j["name"]).data for j in jobs)
