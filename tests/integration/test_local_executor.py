"""The local executor and its shepherd, with real processes; the wrappers claim protocol;
and the status-file parser."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import nbformat
import pytest

import ccd
from ccd.executors.base import (
    STATUS_NAME,
    WRAPPER_NAME,
    Handle,
    Launch,
    StatusRecord,
    parse_status,
    wrapper_text,
)
from ccd.executors.local import LocalExecutor, local_argv
from ccd.executors.procfs import (
    local_boot_time,
    proc_start_ticks,
    proc_stat_fields,
    same_process,
)
from ccd.executors.shepherd import address, socket_name
from ccd.models import ExitStatus
from ccd.usage import Usage
from tests.helpers import eventually, pid_alive
from tests.integration.conftest import as_user

DEADLINE_S = 10.0
REPO_ROOT = Path(ccd.__file__).resolve().parent.parent

MakeLaunch = Callable[..., Launch]


@pytest.fixture
async def executor() -> AsyncIterator[LocalExecutor]:
    ex = LocalExecutor()
    yield ex
    await ex.close()


@pytest.fixture
def make_launch(tmp_path: Path) -> MakeLaunch:
    """A Launch of ``sh script.sh ARGS...`` whose script has the given text."""
    counter = iter(range(1, 1_000_000))

    def make(
        text: str = "true\n",
        *args: str,
        env: dict[str, str] | None = None,
        job: str = "job",
        attempt: int | None = None,
    ) -> Launch:
        n = next(counter)
        script = tmp_path / f"src{n}" / "script.sh"
        script.parent.mkdir()
        script.write_text(text)
        number = n if attempt is None else attempt
        return Launch(
            workflow_id="wf",
            job=job,
            attempt=number,
            run_dir=tmp_path / "runs" / "wf" / job / str(number),
            script=script,
            argv=("sh", "script.sh", *args),
            env=env or {},
        )

    return make


def write_notebook(path: Path, *cells: str) -> None:
    """A notebook of code cells, built and validated by nbformat (which has no type hints)."""
    new_cell: Callable[[str], object] = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[new_cell(s) for s in cells])  # type: ignore[no-untyped-call]
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]


def runs(pid: int, comm: str) -> bool:
    """True once ``pid`` has exec'd ``comm``."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == comm
    except FileNotFoundError:
        return False


def pid_of(handle: Handle) -> int:
    assert handle.pid is not None
    return handle.pid


def parent_of(pid: int) -> int:
    fields = proc_stat_fields(pid)
    assert fields is not None, f"no process {pid}"
    return int(fields[1])


def started(launch: Launch) -> bool:
    status = launch.run_dir / STATUS_NAME
    return status.exists() and status.read_text().startswith("start ")


def log_text(launch: Launch) -> str:
    return (launch.run_dir / "log").read_text()


async def test_success_logs_stdout_and_stderr(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    launch = make_launch("echo to-out\necho to-err >&2\n")
    handle = await executor.start(launch)
    assert handle.pid is not None
    assert handle.host == "local"
    status = await executor.wait(handle)
    assert status == ExitStatus(code=0)
    assert status.ok
    assert log_text(launch) == "to-out\nto-err\n"
    # The script is the submit-time snapshot, hard-linked; no wrapper runs locally.
    assert (launch.run_dir / "script.sh").stat().st_ino == launch.script.stat().st_ino
    assert sorted(p.name for p in launch.run_dir.iterdir()) == ["log", "script.sh", "status"]


def inline_launch(make_launch: MakeLaunch, command: str, *args: str, **kw: object) -> Launch:
    """A Launch of the inline ``run:`` command ``command`` with these arguments."""
    base = make_launch(**kw)
    return dataclasses.replace(
        base, script=base.run_dir / "run.sh", argv=(".", "./run.sh", *args), inline=command
    )


async def test_inline_command_runs_in_sh(executor: LocalExecutor, make_launch: MakeLaunch) -> None:
    launch = inline_launch(make_launch, 'echo "[$1]"', "a b")
    assert await executor.wait(await executor.start(launch)) == ExitStatus(code=0)
    assert log_text(launch) == "[a b]\n"
    assert sorted(p.name for p in launch.run_dir.iterdir()) == ["log", "status"]


def tool_in_path(tmp_path: Path, text: str, mode: int = 0o755) -> tuple[Path, dict[str, str]]:
    """A program ``tool`` with this text in a directory of its own, and a PATH that has it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "tool"
    tool.write_text(text)
    tool.chmod(mode)
    return tool, {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


async def test_plain_command_runs_without_sh_as_sh_would_run_it(
    executor: LocalExecutor, make_launch: MakeLaunch, tmp_path: Path
) -> None:
    tool, env = tool_in_path(tmp_path, '#!/bin/sh\necho "[$0][$1][$PWD]"; exit 4\n')
    launch = inline_launch(make_launch, "tool a", env=env)
    assert local_argv(launch) == ["tool", "a"]  # no sh: found in the job's PATH
    assert await executor.wait(await executor.start(launch)) == ExitStatus(code=4)
    assert log_text(launch) == f"[{tool}][a][{launch.run_dir.absolute()}]\n"


def test_a_command_named_like_an_exported_shell_function_goes_to_sh(
    make_launch: MakeLaunch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASH_FUNC_module%%", "() {  echo loaded\n}")
    assert local_argv(inline_launch(make_launch, "module list"))[:2] == ["sh", "-c"]
    launch = inline_launch(make_launch, "ml list", env={"BASH_FUNC_ml%%": "() {  :\n}"})
    assert local_argv(launch)[:2] == ["sh", "-c"]
    assert local_argv(inline_launch(make_launch, "modules list")) == ["modules", "list"]


async def test_plain_command_without_a_shebang_runs_as_a_shell_script(
    executor: LocalExecutor, make_launch: MakeLaunch, tmp_path: Path
) -> None:
    _, env = tool_in_path(tmp_path, 'echo "[$1]"\n')
    launch = inline_launch(make_launch, "tool b", env=env)
    assert await executor.wait(await executor.start(launch)) == ExitStatus(code=0)
    assert log_text(launch) == "[b]\n"


async def test_plain_command_that_cannot_run_fails_like_sh(
    executor: LocalExecutor, make_launch: MakeLaunch, tmp_path: Path
) -> None:
    tool, _ = tool_in_path(tmp_path, "#!/bin/sh\n", mode=0o644)
    launch = inline_launch(make_launch, str(tool))
    assert await executor.wait(await executor.start(launch)) == ExitStatus(code=126)
    assert log_text(launch) == f"ccd: {tool}: Permission denied\n"
    missing = inline_launch(make_launch, "no-such-program-xyz arg")
    assert await executor.wait(await executor.start(missing)) == ExitStatus(code=127)
    assert log_text(missing) == "ccd: no-such-program-xyz: command not found\n"


async def test_missing_program_fails_like_sh(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    launch = dataclasses.replace(make_launch(), argv=("no-such-interpreter-xyz", "script.sh"))
    assert await executor.wait(await executor.start(launch)) == ExitStatus(code=127)
    assert log_text(launch) == "ccd: no-such-interpreter-xyz: command not found\n"
    assert "exit code=127" in (launch.run_dir / STATUS_NAME).read_text()


async def test_arguments_reach_the_job(executor: LocalExecutor, make_launch: MakeLaunch) -> None:
    launch = make_launch('printf "[%s]" "$@"\n', "a b", "", "$HOME", "*")
    assert await executor.wait(await executor.start(launch)) == ExitStatus(code=0)
    assert log_text(launch) == "[a b][][$HOME][*]"


async def test_exit_code(executor: LocalExecutor, make_launch: MakeLaunch) -> None:
    launch = make_launch("exit 3\n")
    status = await executor.wait(await executor.start(launch))
    assert status == ExitStatus(code=3)
    assert not status.ok


async def test_status_file_records_start_and_exit(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    launch = make_launch("exit 4\n")
    before = time.time()
    handle = await executor.start(launch)
    await executor.wait(handle)
    after = time.time()
    text = (launch.run_dir / STATUS_NAME).read_text()
    start, end = text.splitlines()
    assert start.startswith(f"start pid={handle.pid} host=")
    assert end.startswith("exit code=4 uptime=")
    record = parse_status(text, local_boot_time())
    assert record.pid == handle.pid
    assert record.host == os.uname().nodename
    assert record.exit_code == 4
    assert record.started_at is not None and record.ended_at is not None
    # uptime has centisecond resolution
    assert before - 0.02 <= record.started_at <= record.ended_at <= after + 0.02


async def test_job_killed_by_signal(executor: LocalExecutor, make_launch: MakeLaunch) -> None:
    # The job's shell kills itself; its parent, the shepherd, records 128+9 as sh would.
    launch = make_launch("kill -9 $$\n")
    status = await executor.wait(await executor.start(launch))
    assert status == ExitStatus(code=137, signal=signal.SIGKILL)


async def test_sigterm_kills_the_whole_group(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    # The pid file appears complete (renamed into place) once the grandchild runs.
    launch = make_launch("sleep 300 &\necho $! > tmp.pid\nmv tmp.pid grandchild.pid\nwait\n")
    handle = await executor.start(launch)
    pid_file = launch.run_dir / "grandchild.pid"
    await eventually(pid_file.exists, "the grandchild's pid")
    grandchild = int(pid_file.read_text())
    assert pid_alive(grandchild)

    await executor.signal(handle, signal.SIGTERM)
    status = await executor.wait(handle)

    assert status == ExitStatus(code=143, signal=signal.SIGTERM)
    await eventually(lambda: not pid_alive(grandchild), "the grandchild to die")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM])
async def test_signals_end_the_job_and_are_recorded(
    executor: LocalExecutor, make_launch: MakeLaunch, signum: signal.Signals
) -> None:
    launch = make_launch("exec sleep 300\n")
    handle = await executor.start(launch)
    assert handle.pid is not None
    await eventually(lambda: runs(pid_of(handle), "sleep"), "the job to run")
    await executor.signal(handle, signum)
    assert await executor.wait(handle) == ExitStatus(code=128 + signum, signal=signum)


async def test_job_starts_with_default_signal_dispositions(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    # Python ignores SIGPIPE, and a daemon started in the background ignores SIGINT: neither
    # may leak into jobs (a `yes | head` must end by SIGPIPE, a cancel must be trappable).
    launch = make_launch("grep -E '^Sig(Ign|Blk)' /proc/self/status\n")
    assert await executor.wait(await executor.start(launch)) == ExitStatus(code=0)
    masks = dict(line.split(":") for line in log_text(launch).splitlines())
    # Only standard signals (1-31): 32 and up belong to libc and the container runtime.
    assert int(masks["SigBlk"], 16) & 0x7FFF_FFFF == 0
    assert int(masks["SigIgn"], 16) & 0x7FFF_FFFF == 0


async def test_sigkill_to_group_is_recorded(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    launch = make_launch("sleep 300\n")
    handle = await executor.start(launch)
    await eventually(lambda: started(launch), "the start record")
    await executor.signal(handle, signal.SIGKILL)
    status = await executor.wait(handle)
    assert status == ExitStatus(code=137, signal=signal.SIGKILL)


async def test_signal_after_exit_is_harmless(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    launch = make_launch("exit 0\n")
    handle = await executor.start(launch)
    await executor.wait(handle)
    await executor.signal(handle, signal.SIGTERM)
    assert await executor.wait(handle) == ExitStatus(code=0)


async def test_environment(
    executor: LocalExecutor, make_launch: MakeLaunch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCD_TEST_INHERITED", "from-daemon")
    monkeypatch.setenv("CCD_TEST_OVERRIDDEN", "from-daemon")
    launch = make_launch(
        'echo "$CCD_WORKFLOW|$CCD_JOB|$CCD_ATTEMPT|$CCD_RUN_DIR"\n'
        'echo "$CCD_TEST_INHERITED|$CCD_TEST_OVERRIDDEN|$JOB_VAR"\n'
        "pwd\n",
        env={"CCD_TEST_OVERRIDDEN": "from-job", "JOB_VAR": "x y", "CCD_JOB": "spoofed"},
        job="train",
        attempt=2,
    )
    assert await executor.wait(await executor.start(launch)) == ExitStatus(code=0)
    run_dir = launch.run_dir
    assert log_text(launch).splitlines() == [
        f"wf|train|2|{run_dir}",
        "from-daemon|from-job|x y",
        str(run_dir),
    ]


async def test_read_log_from_offsets(executor: LocalExecutor, make_launch: MakeLaunch) -> None:
    launch = make_launch("printf 'abcdef\\n'\n")
    handle = await executor.start(launch)
    await executor.wait(handle)
    assert await executor.read_log(handle, 0) == b"abcdef\n"
    assert await executor.read_log(handle, 3) == b"def\n"
    assert await executor.read_log(handle, 7) == b""
    assert await executor.read_log(handle, 100) == b""


async def test_read_log_before_any_log(executor: LocalExecutor, make_launch: MakeLaunch) -> None:
    launch = make_launch()
    handle = await executor.start(launch)
    await executor.wait(handle)
    (launch.run_dir / "log").unlink()
    assert await executor.read_log(handle, 0) == b""


async def test_concurrent_waiters_and_cancelled_waiter(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    launch = make_launch("exit 5\n")
    handle = await executor.start(launch)
    cancelled = asyncio.create_task(executor.wait(handle))
    await asyncio.sleep(0)
    cancelled.cancel()
    results = await asyncio.gather(executor.wait(handle), executor.wait(handle))
    assert list(results) == [ExitStatus(code=5), ExitStatus(code=5)]


async def test_reattach_finished_attempt(make_launch: MakeLaunch) -> None:
    launch = make_launch("exit 6\n")
    first = LocalExecutor()
    handle = await first.start(launch)
    await first.wait(handle)
    await first.close()

    second = LocalExecutor()
    try:
        again = await second.reattach(launch)
        assert again is not None
        assert again.pid == handle.pid
        assert await second.wait(again) == ExitStatus(code=6)
    finally:
        await second.close()


async def test_reattach_running_attempt(make_launch: MakeLaunch) -> None:
    launch = make_launch("read line < go\nexit 7\n")
    launch.run_dir.mkdir(parents=True)
    os.mkfifo(launch.run_dir / "go")
    first = LocalExecutor()
    handle = await first.start(launch)
    assert handle.pid is not None
    await eventually(lambda: started(launch), "the start record")
    await first.close()  # the daemon goes away; the job runs on

    second = LocalExecutor()
    try:
        again = await second.reattach(launch)
        assert again is not None
        assert again.pid == handle.pid
        waiter = asyncio.create_task(second.wait(again))
        await asyncio.sleep(0)
        assert not waiter.done()
        await asyncio.to_thread((launch.run_dir / "go").write_text, "go\n")
        assert await waiter == ExitStatus(code=7)
    finally:
        await second.close()


async def test_signal_reattached_attempt(make_launch: MakeLaunch) -> None:
    launch = make_launch("exec sleep 300\n")
    first = LocalExecutor()
    handle = await first.start(launch)
    assert handle.pid is not None
    await eventually(lambda: runs(pid_of(handle), "sleep"), "the job to run")
    await first.close()

    second = LocalExecutor()
    try:
        again = await second.reattach(launch)
        assert again is not None
        await second.signal(again, signal.SIGTERM)
        assert await second.wait(again) == ExitStatus(code=143, signal=signal.SIGTERM)
    finally:
        await second.close()


async def test_reattach_with_reused_pid_is_lost(make_launch: MakeLaunch) -> None:
    # A start record whose pid now belongs to another process (ours, with other ticks).
    launch = make_launch()
    launch.run_dir.mkdir(parents=True)
    ticks = proc_start_ticks(os.getpid())
    assert ticks is not None
    status = launch.run_dir / STATUS_NAME
    status.write_text(f"start pid={os.getpid()} ticks={ticks + 1} host=h uptime=1.00\n")
    executor = LocalExecutor()
    try:
        handle = await executor.reattach(launch)
        assert handle is not None
        await executor.signal(handle, signal.SIGTERM)  # must not hit us
        assert await executor.wait(handle) == ExitStatus(code=None, reason="lost")
    finally:
        await executor.close()


async def test_reattach_claims_attempt_that_never_started(make_launch: MakeLaunch) -> None:
    launch = make_launch("touch ran\n")
    executor = LocalExecutor()
    try:
        assert await executor.reattach(launch) is None
        assert await executor.reattach(launch) is None  # still claimed, still not started
    finally:
        await executor.close()
    status = launch.run_dir / STATUS_NAME
    assert status.read_text() == "claimed\n"

    # The wrapper of a remote host, started late (its daemon's launch still in flight).
    run_dir = launch.run_dir
    (run_dir / WRAPPER_NAME).write_bytes(wrapper_text())
    (run_dir / "script.sh").write_bytes(launch.script.read_bytes())
    env = {**os.environ, "CCD_RUN_DIR": str(run_dir)}
    argv = ["sh", WRAPPER_NAME, *launch.argv]
    result = await asyncio.to_thread(
        subprocess.run, argv, cwd=run_dir, env=env, check=False, timeout=30
    )
    assert result.returncode == 0
    assert not (run_dir / "ran").exists()
    assert not (run_dir / "log").exists()
    assert status.read_text() == "claimed\n"


async def test_start_of_a_claimed_attempt_is_lost(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    launch = make_launch("touch ran\n")
    assert await executor.reattach(launch) is None
    status = await executor.wait(await executor.start(launch))
    assert status == ExitStatus(code=None, reason="lost")
    assert not (launch.run_dir / "ran").exists()


async def test_wait_on_a_foreign_handle(make_launch: MakeLaunch) -> None:
    # A handle this executor did not start or reattach is found through its status file.
    launch = make_launch("exit 9\n")
    first = LocalExecutor()
    handle = await first.start(launch)
    await first.wait(handle)
    await first.close()
    second = LocalExecutor()
    try:
        assert await second.wait(handle) == ExitStatus(code=9)
    finally:
        await second.close()


async def test_one_shepherd_per_state_dir_outlives_its_clients(make_launch: MakeLaunch) -> None:
    first, second = LocalExecutor(), LocalExecutor()
    a, b = make_launch("exec sleep 300\n"), make_launch("exec sleep 300\n")
    try:
        ha, hb = await first.start(a), await second.start(b)
        assert ha.pid is not None and hb.pid is not None
        shepherd = parent_of(ha.pid)
        assert parent_of(hb.pid) == shepherd != os.getpid()
    finally:
        await first.close()
        await second.close()
    # No client is left, but jobs run: the shepherd stays to record their ends.
    assert pid_alive(shepherd)
    third = LocalExecutor()
    try:
        for launch in (a, b):
            handle = await third.reattach(launch)
            assert handle is not None
            await third.signal(handle, signal.SIGTERM)
            assert await third.wait(handle) == ExitStatus(code=143, signal=signal.SIGTERM)
    finally:
        await third.close()
    await eventually(lambda: not pid_alive(shepherd), "the idle shepherd to exit")


async def test_jobs_of_a_dead_shepherd_end_lost(
    executor: LocalExecutor, make_launch: MakeLaunch
) -> None:
    launch = make_launch("exec sleep 300\n")
    handle = await executor.start(launch)
    assert handle.pid is not None
    await eventually(lambda: runs(pid_of(handle), "sleep"), "the job to run")
    os.kill(parent_of(handle.pid), signal.SIGKILL)
    # Orphaned, the job runs on, but nobody can collect its exit code any more.
    waiter = asyncio.create_task(executor.wait(handle))
    await asyncio.sleep(0)
    assert not waiter.done() and pid_alive(handle.pid)
    await executor.signal(handle, signal.SIGTERM)  # still reaches it, checked by its ticks
    assert await waiter == ExitStatus(code=None, reason="lost")
    # The next job gets a new shepherd.
    assert await executor.wait(await executor.start(make_launch("exit 2\n"))) == ExitStatus(2)


async def test_shepherd_refuses_another_user(
    executor: LocalExecutor, make_launch: MakeLaunch, peer_user: str, tmp_path: Path
) -> None:
    running = make_launch("exec sleep 300\n")
    handle = await executor.start(running)  # the shepherd listens now
    name = socket_name(str(running.run_dir.parents[2]))
    target = tmp_path / "runs" / "wf" / "evil" / "1"
    request = {
        "op": "spawn",
        "key": "wf/evil/1",
        "dir": str(target),
        "argv": ["touch", "pwned"],
        "env": {},
        "files": [],
    }
    answer = await asyncio.to_thread(_ask_as, peer_user, address(name), request)
    assert answer == b""  # hung up on without a word
    assert not target.exists()
    await executor.signal(handle, signal.SIGKILL)
    assert (await executor.wait(handle)).signal == signal.SIGKILL  # we are still served


def _ask_as(user: str, addr: str, request: Mapping[str, object]) -> bytes:
    """As ``user``, send ``request`` to the shepherd at ``addr``; what it answers before
    hanging up."""

    def probe() -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(addr)
            with contextlib.suppress(OSError):  # it may hang up before we finish
                s.sendall(json.dumps(request).encode() + b"\n")
            try:
                return s.recv(4096)
            except OSError:
                return b""

    return as_user(user, probe)


async def test_many_concurrent_jobs(executor: LocalExecutor, make_launch: MakeLaunch) -> None:
    launches = [make_launch(f"exit {n}\n") for n in range(20)]
    handles = [await executor.start(launch) for launch in launches]
    statuses = await asyncio.gather(*(executor.wait(h) for h in handles))
    assert [s.code for s in statuses] == list(range(20))


async def test_notebook_job(executor: LocalExecutor, tmp_path: Path) -> None:
    source = tmp_path / "src" / "analysis.ipynb"
    source.parent.mkdir()
    write_notebook(
        source,
        "print('# ccd progress=50 halfway')",
        "import sys; print('oops', file=sys.stderr); 6 * 7",
    )
    launch = Launch(
        workflow_id="wf",
        job="nb",
        attempt=1,
        run_dir=tmp_path / "runs" / "nb",
        script=source,
        argv=(sys.executable, "-m", "ccd.notebook", "analysis.ipynb"),
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    status = await executor.wait(await executor.start(launch))
    log = log_text(launch)
    assert status == ExitStatus(code=0), log
    assert "# ccd progress=50 halfway\n" in log
    assert "oops\n" in log
    executed = json.loads((launch.run_dir / "analysis.out.ipynb").read_text())
    assert "".join(executed["cells"][1]["outputs"][-1]["data"]["text/plain"]) == "42"


def test_notebook_failing_cell(tmp_path: Path) -> None:
    write_notebook(
        tmp_path / "fails.ipynb",
        "print('# ccd progress=10')",
        "raise ValueError('bad cell')",
        "print('never')",
    )
    result = subprocess.run(
        [sys.executable, "-m", "ccd.notebook", "fails.ipynb", "result.ipynb"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1
    assert "# ccd progress=10" in result.stdout
    assert "never" not in result.stdout
    assert "ValueError: bad cell" in result.stderr
    assert "\x1b[" not in result.stderr
    assert (tmp_path / "result.ipynb").exists()


def test_same_process_by_ticks() -> None:
    ticks = proc_start_ticks(os.getpid())
    assert ticks is not None
    assert same_process(os.getpid(), StatusRecord(pid=os.getpid(), start_ticks=ticks))
    assert not same_process(os.getpid(), StatusRecord(pid=os.getpid(), start_ticks=ticks + 1))


def test_same_process_by_start_time() -> None:
    # Without ticks: the pid's holder must have started no later than the recorded start.
    ticks = proc_start_ticks(os.getpid())
    boot_time = local_boot_time()
    assert ticks is not None and boot_time is not None
    our_start = boot_time + ticks / os.sysconf("SC_CLK_TCK")
    assert same_process(os.getpid(), StatusRecord(pid=os.getpid(), started_at=our_start + 0.05))
    assert same_process(os.getpid(), StatusRecord(pid=os.getpid(), started_at=our_start))
    assert not same_process(os.getpid(), StatusRecord(pid=os.getpid(), started_at=our_start - 1))
    assert not same_process(os.getpid(), StatusRecord(pid=os.getpid()))


def test_same_process_gone() -> None:
    assert not same_process(2**22 + 1, StatusRecord(start_ticks=1))  # above any pid_max


# parse_status: pure


def test_parse_status_full_record() -> None:
    text = "start pid=42 ticks=1234 host=node1 uptime=100.50\nexit code=3 uptime=102.25\n"
    assert parse_status(text, boot_time=1000.0) == StatusRecord(
        pid=42,
        start_ticks=1234,
        host="node1",
        started_at=1100.5,
        exit_code=3,
        ended_at=1102.25,
        usage=Usage(wall_s=1.75),
    )


def test_parse_status_reads_what_the_job_used() -> None:
    shepherd = "start pid=42 uptime=10.00\nexit code=0 uptime=12.50 cpu=1.250 maxrss=2048\n"
    assert parse_status(shepherd).usage == Usage(2.5, 1.25, 2048 * 1024)
    wrapper = "start pid=4 uptime=1.00\nexit code=0 uptime=3.00 utime=1m0.5s stime=0m0.25s\n"
    assert parse_status(wrapper).usage == Usage(2.0, 60.75, None)
    assert parse_status("start pid=4 uptime=1.00\n").usage is None  # still running


def test_parse_status_without_boot_time_has_no_times() -> None:
    record = parse_status("start pid=42 ticks=1 host=h uptime=5.00\nexit code=0 uptime=6.00\n")
    assert record.started_at is None
    assert record.ended_at is None
    assert record.exit_code == 0


def test_parse_status_epoch_time_fallback() -> None:
    text = "start pid=42 host=mac time=1700000000\nexit code=0 time=1700000005\n"
    record = parse_status(text, boot_time=5.0)
    assert record.start_ticks is None
    assert record.started_at == 1700000000.0
    assert record.ended_at == 1700000005.0


def test_parse_status_running() -> None:
    record = parse_status("start pid=42 ticks=7 host=h uptime=1.00\n", boot_time=0.0)
    assert (record.pid, record.exit_code, record.ended_at) == (42, None, None)


def test_parse_status_partial_last_line_is_ignored() -> None:
    record = parse_status("start pid=42 ticks=7 host=h uptime=1.00\nexit co", boot_time=0.0)
    assert record.exit_code is None
    assert parse_status("start pid=4").pid is None


def test_parse_status_claimed() -> None:
    assert parse_status("claimed\n") == StatusRecord(claimed=True)


@pytest.mark.parametrize("text", ["", "\n", "garbage\n", "start\n", "exit\n", "\x00\n"])
def test_parse_status_empty_or_garbage(text: str) -> None:
    assert parse_status(text, boot_time=0.0) == StatusRecord()


def test_parse_status_tolerates_unknown_keys_and_bad_values() -> None:
    text = (
        "note whatever\n"
        "start pid=x ticks=9 host=h uptime=soon future=1 flag\n"
        "exit code=1 uptime=2.00 trapped=15\n"
    )
    record = parse_status(text, boot_time=10.0)
    assert record == StatusRecord(
        pid=None,
        start_ticks=9,
        host="h",
        started_at=None,
        exit_code=1,
        ended_at=12.0,
        usage=Usage(),
    )
