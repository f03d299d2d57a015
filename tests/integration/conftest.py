"""A real OpenSSH server for the ssh backend's tests (scripts/infra/sshd-up.sh).

One sshd per pytest process (each xdist worker, and each of several pytest runs at once on
the machine, gets its own): the first port from ``CCD_TEST_SSHD_PORT`` (2240) plus the
worker's number whose lock file ``/tmp/ccd-sshd-test-PORT.lock`` it can take, held for the
session, so no other session stops or restarts that sshd under it. Its files live in
``/tmp/ccd-sshd-test-PORT`` (under /tmp, not pytest's private tmp dirs: sshd reads the
authorized keys as the login user, who must reach them). Where sshd cannot be brought up the
tests skip, saying why; in CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

from ccd.spec.hosts import SshOptions

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "scripts" / "infra"
_ACCEPTED = re.compile(rb"Accepted publickey for (\S+) from \S+ port (\d+)")
_SESSION = re.compile(rb"Starting session: \S+(?: '[^']*')? for (\S+) from \S+ port (\d+)")


@dataclass(frozen=True, slots=True)
class Sshd:
    """A running test sshd: where it listens, who logs in, and helpers to disturb it."""

    dir: Path
    host: str
    port: int
    user: str
    key: str
    known_hosts: str
    log: Path
    runs: str  # this sshd's share of the login user's home for remote run dirs (~/...)

    def options(self, **overrides: Any) -> SshOptions:
        values: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "user": self.user,
            "identity": self.key,
            "known_hosts": self.known_hosts,
        }
        return SshOptions(**(values | overrides))

    def log_offset(self) -> int:
        """The log's size now; count connections and sessions after it (it is appended to
        across restarts and ends lines with \\r\\n: read in binary)."""
        return self.log.stat().st_size

    def log_since(self, offset: int) -> bytes:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read()

    def connections_since(self, offset: int) -> list[int]:
        """Client ports of the connections our user opened since ``offset``."""
        text = self.log_since(offset)
        return [int(port) for user, port in _ACCEPTED.findall(text) if user == self.user.encode()]

    def sessions_since(self, offset: int) -> list[int]:
        """Client ports of the session channels our user opened since ``offset``."""
        text = self.log_since(offset)
        return [int(port) for user, port in _SESSION.findall(text) if user == self.user.encode()]

    def listener_pid(self) -> int:
        return int((self.dir / "sshd.pid").read_text().strip())

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.listener_pid())],
            capture_output=True,
            text=True,
            check=False,
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        _script("sshd-down.sh", self.dir, self.port)

    def start(self) -> None:
        _script("sshd-up.sh", self.dir, self.port)


def _script(name: str, directory: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SSHD_UP_PORT=str(port))
    return subprocess.run(
        ["bash", str(INFRA / name), str(directory)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        start_new_session=True,
    )


_PORTS_TO_TRY = 64


def _claim_port() -> tuple[int, IO[str]] | None:
    """A port no other test session uses, with its lock (to hold until the end)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    offset = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    base = int(os.environ.get("CCD_TEST_SSHD_PORT", "2240")) + offset
    for port in range(base, base + _PORTS_TO_TRY):
        lock = open(f"/tmp/ccd-sshd-test-{port}.lock", "w")  # noqa: SIM115 - held open
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        # Free, or held by the sshd a crashed session of ours left in that dir (reused).
        if _port_free(port) or Path(f"/tmp/ccd-sshd-test-{port}/sshd.pid").exists():
            return port, lock
        lock.close()
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd: TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = shlex.split(value)[0] if value else ""
    return values


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"sshd for the ssh tests could not be brought up: {reason}")
    pytest.skip(f"no test sshd: {reason}")


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    if os.geteuid() != 0:
        _unavailable("scripts/infra/sshd-up.sh must run as root")
    claimed = _claim_port()
    if claimed is None:
        _unavailable(f"no free port for sshd in {_PORTS_TO_TRY} from CCD_TEST_SSHD_PORT")
    port, lock = claimed
    directory = Path(f"/tmp/ccd-sshd-test-{port}")
    try:
        yield from _serve(directory, port)
    finally:
        lock.close()


def _serve(directory: Path, port: int) -> Iterator[Sshd]:
    try:
        _script("sshd-up.sh", directory, port)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = getattr(err, "stderr", "") or ""
        _unavailable(f"sshd-up.sh failed: {err} {detail.strip()[-500:]}")
    env = _read_env(directory / "env.sh")
    runs = f"~/ccd-test-runs/{port}"
    local_runs = Path(f"~{env['CCD_SSH_USER']}").expanduser() / runs.removeprefix("~/")
    shutil.rmtree(local_runs, ignore_errors=True)  # the same machine: a leftover of a run
    yield Sshd(
        dir=directory,
        host=env["CCD_SSH_HOST"],
        port=int(env["CCD_SSH_PORT"]),
        user=env["CCD_SSH_USER"],
        key=env["CCD_SSH_KEY"],
        known_hosts=env["CCD_SSH_KNOWN_HOSTS"],
        log=Path(env["CCD_SSH_LOG"]),
        runs=runs,
    )
    _script("sshd-down.sh", directory, port)
    shutil.rmtree(local_runs, ignore_errors=True)


PEER_USER = "ccdpeer"


@pytest.fixture(scope="session")
def peer_user() -> str:
    """An unprivileged user for the peer-uid tests, created here if missing."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the peer-uid tests need root to create a user; CI runs as root")
        pytest.skip("needs root to create a second user")
    deadline = time.monotonic() + 30
    while True:
        try:
            pwd.getpwnam(PEER_USER)
            return PEER_USER
        except KeyError:
            pass
        # Another test worker may be adding it at the same moment (useradd then fails to
        # lock /etc/passwd): try again until it exists.
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", PEER_USER],
            check=False,
            capture_output=True,
        )
        if time.monotonic() > deadline:
            pytest.fail(f"could not create the user {PEER_USER}")


def as_user(user: str, probe: Callable[[], bytes]) -> bytes:
    """Run ``probe`` in a child process that has dropped to ``user``'s uid and gid; what it
    returns comes back through a pipe (the child exits at once, whatever happens)."""
    entry = pwd.getpwnam(user)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.write(write_end, probe())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer
