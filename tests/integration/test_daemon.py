"""The real daemon process over its real socket, driven by ccctl and the Python client."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccd.client import ApiError, Client
from tests.helpers import pid_alive, wait_for
from tests.integration.conftest import as_user
from tests.integration.daemon_fixture import DaemonProcess


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path).start()
    yield d
    d.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_submit_wait_and_status_json(daemon: DaemonProcess, tmp_path: Path) -> None:
    wf = write(
        tmp_path / "wf.yaml",
        """
        name: hello
        jobs:
          a: {run: 'echo "# ccd progress=50 half"; echo out; echo err >&2'}
          b: {run: 'exit 3', needs: [a]}
          c: {run: 'true', needs: [b]}
    """,
    )
    done = daemon.ccctl("submit", str(wf), "--wait", "--json")
    assert done.returncode == 1, done.stderr
    status = json.loads(done.stdout)
    assert status["workflow"]["name"] == "hello" and status["workflow"]["state"] == "failed"
    jobs = {j["name"]: j for j in status["jobs"]}
    assert (jobs["a"]["state"], jobs["a"]["progress"]) == ("succeeded", 50)
    assert (jobs["b"]["state"], jobs["b"]["exit_code"]) == ("failed", 3)
    assert jobs["c"]["state"] == "skipped"
    again = daemon.ccctl("status", status["workflow"]["id"], "--json", check=True)
    assert json.loads(again.stdout) == status
    listing = json.loads(daemon.ccctl("list", "--json", check=True).stdout)
    assert [w["id"] for w in listing] == [status["workflow"]["id"]]


def test_submit_is_idempotent_on_request_id(daemon: DaemonProcess, tmp_path: Path) -> None:
    wf = write(tmp_path / "wf.yaml", "jobs:\n  a: {run: 'true'}\n")
    first = daemon.client.submit(wf, request_id="req-42")
    assert daemon.client.submit(wf, request_id="req-42") == first
    assert len(daemon.client.list_workflows()) == 1


def test_scripts_are_copied_at_submit(daemon: DaemonProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = write(tmp_path / "job.sh", "echo original\n")
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          wait: {{run: 'while [ ! -e {gate} ]; do sleep 0.02; done'}}
          show: {{script: job.sh, needs: [wait]}}
    """,
    )
    wf_id = daemon.client.submit(wf)
    script.write_text("echo edited\n")
    gate.touch()
    daemon.client.wait(wf_id)
    assert daemon.client.log(wf_id, "show").data == b"original\n"


def test_logs_from_offsets_and_follow(daemon: DaemonProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          talk: {{run: 'echo one; while [ ! -e {gate} ]; do sleep 0.02; done; echo two'}}
    """,
    )
    wf_id = daemon.client.submit(wf)
    wait_for(lambda: _log_has(daemon.client, wf_id, b"one\n"), what="the first line")
    first = daemon.client.log(wf_id, "talk")
    assert (first.data, first.offset, first.done) == (b"one\n", 4, False)
    follower = daemon.ccctl_popen("logs", wf_id, "talk", "-f")
    gate.touch()
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0
    assert out == "one\ntwo\n"
    rest = daemon.client.log(wf_id, "talk", offset=first.offset)
    assert rest.data == b"two\n" and rest.offset == 8


def _log_has(client: Client, wf_id: str, data: bytes) -> bool:
    try:
        return client.log(wf_id, "talk").data == data
    except ApiError:  # no attempt yet
        return False


def test_cancel_mid_run_kills_process_groups(daemon: DaemonProcess, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          long: {{run: 'sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait'}}
          after: {{run: 'true', needs: [long]}}
    """,
    )
    wf_id = daemon.client.submit(wf)
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="job start")
    result = daemon.ccctl("cancel", wf_id, check=True)
    assert "long" in result.stdout
    status = daemon.client.wait(wf_id)
    assert {j["name"]: j["state"] for j in status["jobs"]} == {
        "long": "cancelled",
        "after": "cancelled",
    }
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not pid_alive(pid), what=f"pid {pid} to die")


def test_retry_failed_jobs_and_descendants(daemon: DaemonProcess, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          flaky: {{run: 'test -e {flag}'}}
          after: {{run: 'true', needs: [flaky]}}
          fine: {{run: 'true'}}
    """,
    )
    wf_id = daemon.client.submit(wf)
    assert daemon.client.wait(wf_id)["workflow"]["state"] == "failed"
    flag.touch()
    result = daemon.ccctl("retry", wf_id, "--json", check=True)
    assert sorted(json.loads(result.stdout)["retried"]) == ["after", "flaky"]
    status = daemon.client.wait(wf_id)
    assert status["workflow"]["state"] == "succeeded"
    jobs = {j["name"]: j for j in status["jobs"]}
    assert (jobs["flaky"]["attempts"], jobs["fine"]["attempts"]) == (2, 1)
    refused = daemon.ccctl("retry", wf_id, "fine")
    assert refused.returncode == 1 and "only failed" in refused.stderr


def test_delete_finished_workflow(daemon: DaemonProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = write(
        tmp_path / "wf.yaml", f"jobs:\n  a: {{run: 'while [ ! -e {gate} ]; do sleep 0.02; done'}}\n"
    )
    wf_id = daemon.client.submit(wf)
    busy = daemon.ccctl("delete", wf_id)
    assert busy.returncode == 1 and "still running" in busy.stderr
    gate.touch()
    daemon.client.wait(wf_id)
    run_dir = daemon.state_dir / "runs" / wf_id
    assert run_dir.is_dir()
    daemon.ccctl("delete", wf_id, check=True)
    assert not run_dir.exists()
    gone = daemon.ccctl("status", wf_id)
    assert gone.returncode == 1 and "no workflow" in gone.stderr


def test_two_workflows_share_the_host_limit(tmp_path: Path) -> None:
    config = write(tmp_path / "ccd.yaml", "hosts:\n  local: {type: local, max_jobs: 2}\n")
    active = tmp_path / "active"
    active.mkdir()
    me = f"{active}/$CCD_WORKFLOW.$CCD_JOB"
    job = f"touch {me}; ls {active} | wc -l >> {tmp_path}/counts; sleep 0.2; rm {me}"
    wf = write(
        tmp_path / "wf.yaml", "jobs:\n" + "".join(f"  j{i}: {{run: '{job}'}}\n" for i in range(4))
    )
    d = DaemonProcess(tmp_path, config).start()
    try:
        ids = [d.client.submit(wf), d.client.submit(wf)]
        assert [d.client.wait(i)["workflow"]["state"] for i in ids] == ["succeeded"] * 2
    finally:
        d.stop()
    counts = [int(c) for c in (tmp_path / "counts").read_text().split()]
    assert len(counts) == 8 and max(counts) == 2


def test_malformed_and_oversized_requests_get_4xx(daemon: DaemonProcess) -> None:
    cases = [
        (
            b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 9\r\n\r\n{not json",
            400,
        ),
        (
            b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            400,
        ),
        (
            b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 60\r\n\r\n"
            + json.dumps({"yaml": "jobs: [", "source": "x", "base_dir": "/"}).ljust(60).encode(),
            422,
        ),
        (b"GET /workflows/nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /workflows/x/jobs/y/log?offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (
            b"GET /workflows/x/jobs/y/log?offset=99999999999999999999999 HTTP/1.1\r\n"
            b"Host: x\r\n\r\n",
            400,
        ),
        (
            b"GET /workflows/x/jobs/y/log?offset=9223372036854775807 HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
        (b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    ]
    for raw, expected in cases:
        assert _raw_status(daemon.socket, raw) == expected, raw[:60]
    # A body larger than the limit, sent without a length header (chunked): also 413.
    chunk = b"x" * (1 << 20)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17)) + b"0\r\n\r\n"
    head = b"POST /workflows HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert _raw_status(daemon.socket, head + chunked) == 413
    # Garbage that is not HTTP at all: the connection is dropped, the daemon lives on.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket))
        s.sendall(b"\x00\xff garbage \r\n\r\n")
        s.recv(4096)
    assert daemon.client.health()["status"] == "ok"


def test_every_error_body_is_one_json_message(daemon: DaemonProcess) -> None:
    for raw in (
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"PUT /workflows HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    ):
        body = json.loads(_raw_body(daemon.socket, raw))
        assert set(body) == {"error"} and body["error"], body


def test_log_of_a_job_that_has_none_says_why(daemon: DaemonProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          a: {{run: 'while [ ! -e {gate} ]; do sleep 0.05; done; sleep 2'}}
          b: {{run: 'echo b ran', needs: [a]}}
    """,
    )
    wf_id = daemon.client.submit(wf)
    try:
        unknown = daemon.ccctl("logs", wf_id, "nosuch")
        assert unknown.returncode == 1
        assert f"workflow '{wf_id}' has no job 'nosuch'" in unknown.stderr
        waiting = daemon.ccctl("logs", wf_id, "b")
        assert waiting.returncode == 1 and "'b'" in waiting.stderr
        assert "has not started yet" in waiting.stderr
        # Asks while a still runs (its last 2 s): b has no log yet, and it waits for one.
        follower = daemon.ccctl_popen("logs", "-f", wf_id, "b")
    finally:
        gate.touch()
    out, err = follower.communicate(timeout=60)
    assert (follower.returncode, out, err) == (0, "b ran\n", "")
    assert daemon.client.wait(wf_id)["workflow"]["state"] == "succeeded"


def test_submit_of_a_file_the_daemon_cannot_run_writes_nothing(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    own_host = write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          pool: {type: local, max_jobs: 2}
        jobs:
          a: {run: 'true'}
          b: {host: pool, run: 'true'}
    """,
    )
    refused = daemon.ccctl("submit", str(own_host))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == (
        f"{own_host}:6: job 'b': field 'host': host 'pool' is defined in the workflow file;"
        " the daemon runs jobs only on the hosts of its config (local): define it there, or"
        " use `ccctl run`"
    )
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("jobs:\n  a: {run: 'echo caf\xe9'}\n".encode("latin-1"))
    unreadable = daemon.ccctl("submit", str(latin1))
    assert unreadable.returncode == 2
    assert unreadable.stderr.startswith(f"{latin1}: cannot read workflow file: 'utf-8' codec")
    assert len(unreadable.stderr.strip().splitlines()) == 1
    assert daemon.client.list_workflows() == []
    assert daemon.client.health()["status"] == "ok"


def _raw_status(path: Path, request: bytes) -> int:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(path))
        s.sendall(request)
        head = b""
        while b"\r\n" not in head:
            data = s.recv(4096)
            if not data:
                break
            head += data
    return int(head.split(b" ", 2)[1])


def test_openapi_document_describes_the_api(daemon: DaemonProcess) -> None:
    doc = json.loads(
        _raw_body(
            daemon.socket, b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    )
    paths = doc["paths"]
    assert {
        "/health",
        "/workflows",
        "/workflows/{workflow_id}",
        "/events",
        "/workflows/{workflow_id}/cancel",
        "/workflows/{workflow_id}/retry",
    } <= set(paths)
    assert "post" in paths["/workflows"] and "delete" in paths["/workflows/{workflow_id}"]
    assert not any(op in paths[p] for p in paths for op in ("put", "patch"))
    state_changing = {"/workflows/{workflow_id}/cancel", "/workflows/{workflow_id}/retry"}
    assert all(set(paths[p]) == {"post"} for p in state_changing)


def _raw_body(path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def test_second_daemon_on_the_same_state_dir_is_refused(daemon: DaemonProcess) -> None:
    second = subprocess.run(daemon.argv(), capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert f"pid {daemon.proc.pid}" in second.stderr and str(daemon.state_dir) in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert daemon.client.health()["status"] == "ok"  # the first one is untouched


def test_a_socket_another_daemon_serves_is_not_taken_over(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    argv = [
        sys.executable,
        "-m",
        "ccd",
        "--state-dir",
        str(other / "state"),
        "--socket",
        str(daemon.socket),
    ]
    second = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"ccd: socket {daemon.socket} is in use by another ccd: stop it, or give this one --socket"
    )
    assert daemon.client.health()["pid"] == daemon.proc.pid  # still served by the first
    not_a_socket = tmp_path / "run" / "file"
    not_a_socket.write_text("keep me")
    argv[-1] = str(not_a_socket)
    third = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert third.returncode == 1 and "is not a socket" in third.stderr
    assert not_a_socket.read_text() == "keep me"


def test_startup_errors_are_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    argv = [
        sys.executable,
        "-m",
        "ccd",
        "--state-dir",
        str(afile / "state"),
        "--socket",
        str(tmp_path / "s.sock"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == f"ccd: {afile / 'state'}: Not a directory"


def test_socket_is_private(daemon: DaemonProcess) -> None:
    assert daemon.socket.stat().st_mode & 0o777 == 0o600
    assert daemon.socket.parent.stat().st_mode & 0o777 == 0o700


def test_client_without_daemon_says_how_to_start_it(tmp_path: Path) -> None:
    env = dict(os.environ, CCD_SOCKET=str(tmp_path / "none.sock"))
    result = subprocess.run(
        [sys.executable, "-m", "cli", "status"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 1
    assert "ccd is not running" in result.stderr and "systemctl --user start ccd" in result.stderr


def _probe_as(user: str, sock_path: Path) -> str:
    """As ``user``, ask the daemon for /health: "EACCES" if the kernel refuses the
    connection, else the HTTP status the daemon answered."""

    def probe() -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            try:
                s.connect(str(sock_path))
            except PermissionError:
                return b"EACCES"
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(4096).split(b" ")[1]

    return as_user(user, probe).decode()


def test_peer_with_another_uid_is_refused(peer_user: str) -> None:
    # pytest's tmp dirs are 0700 all the way up; the peer must be able to reach the socket
    # once we open it up, so this daemon lives in a directory it may traverse.
    root = Path(tempfile.mkdtemp(prefix="ccd-peer-"))
    root.chmod(0o711)
    daemon = DaemonProcess(root).start()
    try:
        # With the socket's own 0600/0700 modes the kernel refuses the other user outright.
        assert _probe_as(peer_user, daemon.socket) == "EACCES"
        # Opened up on purpose, the daemon's own SO_PEERCRED check still refuses it.
        daemon.socket.parent.chmod(0o711)
        daemon.socket.chmod(0o666)
        assert _probe_as(peer_user, daemon.socket) == "403"
        assert daemon.client.health()["status"] == "ok"  # and we are still served
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(600)  # seven daemon restarts; slow on a loaded 2-core machine
def test_crash_test_kill9_and_sigterm_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """60 jobs append their names to a file; the daemon is killed with SIGKILL at 5 random
    moments and stopped with SIGTERM at 2 more, restarted each time. In the end every job
    succeeded and every name appears exactly once."""
    out = tmp_path / "names"
    lines = ["jobs:"]
    for i in range(60):
        needs = f", needs: [j{i - 6}]" if i >= 6 else ""
        lines.append(f"  j{i}: {{run: 'sleep 0.1; echo $CCD_JOB >> {out}'{needs}}}")
    wf = write(tmp_path / "wf.yaml", "\n".join(lines) + "\n")
    rng = random.Random(os.environ.get("CCD_CRASH_SEED", "ccd"))
    d = DaemonProcess(tmp_path).start()
    wf_id = d.client.submit(wf, request_id="crash-test")
    for stop_signal in rng.sample([signal.SIGKILL] * 5 + [signal.SIGTERM] * 2, 7):
        _sleep_random(rng)
        if stop_signal == signal.SIGKILL:
            d.kill9()
        else:
            assert d.stop(signal.SIGTERM, timeout_s=10) == 0
        d.start()
        assert d.client.submit(wf, request_id="crash-test") == wf_id  # no duplicate workflow
    status = d.client.wait(wf_id)
    d.stop()
    assert status["workflow"]["state"] == "succeeded", status
    names = out.read_text().split()
    assert sorted(names) == sorted(f"j{i}" for i in range(60)), "a job was lost or ran twice"


def test_cancel_requested_before_a_restart_is_carried_out_after_it(tmp_path: Path) -> None:
    """A job that ignores SIGTERM is cancelled, and the daemon stops during the grace period
    before the SIGKILL: the daemon that comes back must still kill it."""
    config = write(tmp_path / "ccd.yaml", "limits: {kill_grace_s: 60}\n")
    pids = tmp_path / "pids"
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          stubborn: {{run: 'trap "" TERM; echo $$ > {pids}; sleep 300 & wait; wait'}}
    """,
    )
    d = DaemonProcess(tmp_path, config).start()
    try:
        wf_id = d.client.submit(wf)
        wait_for(lambda: pids.exists() and pids.read_text().strip() != "", what="job start")
        pid = int(pids.read_text())
        d.ccctl("cancel", wf_id, check=True)
        assert d.stop(signal.SIGTERM, timeout_s=10) == 0
        assert pid_alive(pid)  # TERM ignored, and no daemon left to send KILL
        d.config = write(tmp_path / "ccd.yaml", "limits: {kill_grace_s: 0.5}\n")
        d.start()
        status = d.client.wait(wf_id)
    finally:
        d.stop()
    assert [(j["state"], j["reason"]) for j in status["jobs"]] == [
        ("cancelled", "cancelled by user")
    ]
    wait_for(lambda: not pid_alive(pid), what=f"pid {pid} to die")


def test_logs_follow_a_job_across_a_daemon_restart(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          a: {{run: 'echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo finished'}}
    """,
    )
    d = DaemonProcess(tmp_path).start()
    try:
        wf_id = d.client.submit(wf)
        follower = d.ccctl_popen("logs", "-f", wf_id, "a")
        assert follower.stdout is not None
        assert follower.stdout.readline() == "started\n"
        assert d.stop(signal.SIGTERM, timeout_s=10) == 0
        d.start()
        gate.touch()
        out, err = follower.communicate(timeout=60)
        assert d.client.wait(wf_id)["workflow"]["state"] == "succeeded"
    finally:
        d.stop()
    assert (follower.returncode, out, err) == (0, "finished\n", "")


def _sleep_random(rng: random.Random) -> None:
    # The moments are random, which is the point; this wait is not waiting for any state.
    import time

    time.sleep(rng.uniform(0.05, 0.8))
