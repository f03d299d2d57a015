"""The local shepherd: the parent of every local job, outliving the daemon that asked for it.

A job's exit code can only be collected by its parent. If the daemon were that parent, a daemon
restart would orphan its jobs and lose how they ended; a `sh` wrapper per job (what remote hosts
use) keeps the exit code but costs a fork and a second exec per job, more than running `true`
itself. So local jobs are started by this small process instead: one per state directory, in its
own session, started by the first `LocalExecutor` that needs it and gone once it has neither
jobs nor clients. A restarted daemon finds it again and is told how its jobs ended.

It keeps the wrapper's protocol (see ``wrapper.sh``): it claims an attempt by creating its
``status`` file exclusively (so nothing runs twice), writes the same ``start`` and ``exit``
records, and sends the job's output to ``log``. The job itself is spawned directly, in a new
session, with ``posix_spawn``.

Clients talk to it over an abstract Unix socket (no file to go stale) in JSON lines; both ends
check that the other runs as the same user. Requests, answered in order:

    {"op": "spawn", "key", "dir", "argv", "env", "files": [[src, name], ...]}
        -> {"op": "started", "key", "pid"}, {"op": "claimed", "key"} (it must never run)
           or {"op": "error", "key", "message"} (its run directory could not be made)
    {"op": "watch", "key"}         -> {"op": "watching", "key", "pid"} or {"op": "unknown", "key"}

and every client is told of every end: {"op": "exited", "key", "code", "log": size in bytes,
"usage": {"wall", "cpu" (seconds), "maxrss" (KiB)} or null}, sent after the exit record is
written. Started as ``python3 -I -S shepherd.py NAME READY_FD``
(standard library only); it forks away from its starter and writes a line to READY_FD once it
listens.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

# An attempt's files in its run directory, for every backend (ccd.executors.base names them
# from here: this module cannot import the ccd package).
STATUS_NAME = "status"
LOG_NAME = "log"
# Until a first client connects, an idle shepherd waits this long before giving up.
FIRST_CLIENT_GRACE_S = 10.0
# Signals Python ignores or a daemon may inherit ignored; jobs get them at their defaults.
DEFAULT_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGPIPE,
    signal.SIGTERM,
    signal.SIGXFSZ,
)
# The exit codes of a job that did not start, as sh reports them; and of one that was killed
# because it could not be watched.
_NOT_FOUND = 127
_CANNOT_RUN = 126
_KILLED = 128 + signal.SIGKILL
_SH = "/bin/sh"
_MAX_LINE = 1 << 24  # a request carrying a 100k-character env is fine; a runaway peer is not
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def socket_name(runs_root: str) -> str:
    """The shepherd's name for a state dir's ``runs`` directory: its socket's abstract address
    without the leading NUL (which cannot be passed on a command line)."""
    digest = hashlib.sha256(os.fsencode(runs_root)).hexdigest()[:32]
    return f"ccd-shepherd-{os.getuid()}-{digest}"


# Compact JSON without the check for cycles (messages are plain data): one line per message.
_encode = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode


def encode_line(message: dict[str, Any]) -> bytes:
    return _encode(message).encode() + b"\n"


def address(name: str) -> str:
    return "\0" + name


def peer_uid(sock: socket.socket) -> int:
    cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    uid: int = _CRED.unpack(cred)[1]
    return uid


def uptime_s() -> float:
    """What ``/proc/uptime`` says, without reading it: the clock it is made from."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class _CannotStart(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(slots=True)
class _Job:
    key: str
    pid: int
    pidfd: int
    run_dir: str
    began: float  # uptime_s() at the start record


@dataclass(slots=True)
class _Client:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)


class Shepherd:
    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, self._accept)
        self._clients: dict[socket.socket, _Client] = {}
        self._jobs: dict[str, _Job] = {}
        self._served = False
        self._host = socket.gethostname()
        self._base_env = dict(os.environb)
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        self._programs: dict[tuple[str, str], str] = {}  # (argv[0], PATH) -> its file

    def run(self) -> None:
        started = time.monotonic()
        while self._jobs or self._clients or not self._served:
            timeout = None
            if not self._served:
                timeout = FIRST_CLIENT_GRACE_S - (time.monotonic() - started)
                if timeout <= 0:
                    return
            for key, _ in self._selector.select(timeout):
                key.data(key.fileobj)

    # -- clients -----------------------------------------------------------------------------

    def _accept(self, listener: Any) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        if peer_uid(sock) != os.getuid():
            sock.close()
            return
        sock.setblocking(False)
        self._clients[sock] = _Client(sock)
        self._selector.register(sock, selectors.EVENT_READ, self._read)
        self._served = True

    def _read(self, sock: Any) -> None:
        client = self._clients[sock]
        try:
            data = sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or len(client.buffer) > _MAX_LINE:
            self._drop(client)
            return
        client.buffer += data
        *lines, rest = client.buffer.split(b"\n")
        client.buffer = bytearray(rest)
        for line in lines:
            if client.sock not in self._clients:
                return
            try:
                self._handle(client, json.loads(line.decode()))
            except (ValueError, KeyError, TypeError, IndexError) as err:
                # Only our own daemons talk to us; a malformed request is a bug there.
                print(f"shepherd: bad request dropped the client: {err}", file=sys.stderr)
                self._drop(client)
                return

    def _drop(self, client: _Client) -> None:
        if client.sock not in self._clients:
            return
        self._selector.unregister(client.sock)
        del self._clients[client.sock]
        client.sock.close()

    def _send(self, client: _Client, message: dict[str, Any]) -> None:
        data = encode_line(message)
        try:
            # Answers are small and clients read all the time; a client whose buffer is full
            # is stuck or gone, and is dropped rather than block every other job.
            sent = client.sock.send(data)
        except OSError:
            sent = -1
        if sent != len(data):
            self._drop(client)

    def _handle(self, client: _Client, request: dict[str, Any]) -> None:
        op = request["op"]
        if op == "spawn":
            answer, failure = self._spawn(request)
            self._send(client, answer)
            if failure is not None:  # it could not start: it has ended; the answer went first
                self._broadcast(answer["key"], failure, None)
        elif op == "watch":
            job = self._jobs.get(request["key"])
            if job is None:
                self._send(client, {"op": "unknown", "key": request["key"]})
            else:
                self._send(client, {"op": "watching", "key": job.key, "pid": job.pid})

    # -- jobs --------------------------------------------------------------------------------

    def _spawn(self, request: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        """Claim, prepare and start one attempt: the answer, and the exit code it ended with
        if it could not start."""
        key: str = request["key"]
        # Paths stay strings here: pathlib would cost more than the rest of the bookkeeping.
        run_dir: str = request["dir"]
        try:
            status_fd = _prepare(run_dir, request["files"])
        except OSError as err:  # e.g. the run directory cannot be made
            return {"op": "error", "key": key, "message": f"{run_dir}: {err}"}, None
        if status_fd is None:
            # Claimed by a recovering daemon, or already run: it must never run (again).
            return {"op": "claimed", "key": key}, None
        env = self._base_env.copy()
        env.update((os.fsencode(k), os.fsencode(v)) for k, v in request["env"].items())
        # A job run without sh gets the PWD sh would have set (not ours, which is stale).
        env[b"PWD"] = os.fsencode(run_dir)
        # Closed once the start is recorded: only a pidfd is held per running job.
        with os.fdopen(status_fd, "wb", buffering=0) as status:
            try:
                pid = self._start(run_dir, request["argv"], env)
            except _CannotStart as failure:
                status.write(_exit_record(failure.code))
                return {"op": "started", "key": key, "pid": None}, failure.code
            # No ticks= (reading /proc/PID/stat while the job execs costs more than the
            # rest of a start): the job is ours until we reap it, and after a crash its
            # identity is checked against this uptime stamp (see procfs.same_process).
            began = uptime_s()
            status.write(f"start pid={pid} host={self._host} uptime={began:.2f}\n".encode())
            pidfd = _pidfd_or_kill(pid)
            if pidfd is None:
                status.write(_exit_record(_KILLED))
                return {"op": "started", "key": key, "pid": pid}, _KILLED
        job = _Job(key, pid, pidfd, run_dir, began)
        self._jobs[key] = job
        self._selector.register(pidfd, selectors.EVENT_READ, functools.partial(self._reap, job))
        return {"op": "started", "key": key, "pid": pid}, None

    def _start(self, run_dir: str, argv: list[str], env: dict[bytes, bytes]) -> int:
        """Spawn the job in ``run_dir``, in a session of its own, output to its log: its pid.
        If it cannot start, `_CannotStart` with sh's exit code (127: no such program, 126:
        it cannot be run) and the reason in the log."""
        try:
            log_fd = os.open(
                os.path.join(run_dir, LOG_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
        except OSError:
            raise _CannotStart(_NOT_FOUND) from None
        path = env.get(b"PATH", os.defpath.encode()).decode(errors="replace")
        # Single-threaded: changing our own working directory is how posix_spawn (which in
        # Python 3.11 has no chdir action) starts the job in its run directory.
        try:
            os.chdir(run_dir)
            program = self._program(argv[0], path)
            if program is None:
                os.write(log_fd, f"ccd: {argv[0]}: command not found\n".encode())
                raise _CannotStart(_NOT_FOUND)
            try:
                return self._spawn_program(program, argv, env, log_fd)
            except OSError as err:
                if err.errno != errno.ENOEXEC:
                    raise
                # No "#!" line: a shell script, as sh (and execvp) take it.
                return self._spawn_program(_SH, [_SH, program, *argv[1:]], env, log_fd)
        except OSError as err:
            self._programs.pop((argv[0], path), None)
            os.write(log_fd, f"ccd: {argv[0]}: {err.strerror}\n".encode())
            code = _NOT_FOUND if isinstance(err, FileNotFoundError) else _CANNOT_RUN
            raise _CannotStart(code) from None
        except ValueError as err:  # e.g. a NUL byte in an argument: no exec can take it
            os.write(log_fd, f"ccd: {argv[0]!r}: {err}\n".encode())
            raise _CannotStart(_CANNOT_RUN) from None
        finally:
            os.close(log_fd)
            os.chdir("/")

    def _program(self, name: str, path: str) -> str | None:
        """The file that ``name`` runs: itself if it has a slash, else the first of that name
        in PATH, remembered like a shell's hash table (and forgotten if it fails to start)."""
        if "/" in name:
            return name
        program = self._programs.get((name, path)) or shutil.which(name, path=path)
        if program is not None:
            self._programs[(name, path)] = program
        return program

    def _spawn_program(
        self, program: str, argv: list[str], env: dict[bytes, bytes], log_fd: int
    ) -> int:
        return os.posix_spawn(
            program,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, self._devnull, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
            setsigdef=DEFAULT_SIGNALS,
            setsigmask=(),
        )

    def _reap(self, job: _Job, pidfd: Any) -> None:
        """Record how a job ended and what it used, and tell every client, with its log's
        final size (so that a client that has read that much need not open the log again).

        What it used is the kernel's rusage of the job's process (wait4): its own CPU time
        plus that of every descendant that was waited for (each process's waited-for
        children are folded into its own figures when it is reaped), and the largest peak
        RSS among them. Processes the job left running, or never waited for, are not in it."""
        _, wait_status, rusage = os.wait4(job.pid, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        if code < 0:
            code = 128 - code  # killed by signal N: 128+N, as sh reports it
        self._selector.unregister(pidfd)
        os.close(pidfd)
        del self._jobs[job.key]
        ended = uptime_s()
        usage = {
            "wall": round(ended - job.began, 3),
            "cpu": round(rusage.ru_utime + rusage.ru_stime, 3),
            "maxrss": rusage.ru_maxrss,  # KiB on Linux
        }
        try:
            # O_CREAT: a job may have emptied its own run directory; its end is still told.
            status_fd = os.open(
                os.path.join(job.run_dir, STATUS_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT
            )
            try:
                os.write(status_fd, _exit_record(code, ended, usage))
            finally:
                os.close(status_fd)
        except OSError as err:  # e.g. the run directory is gone: the clients hear it anyway
            print(f"shepherd: {job.key}: exit record not written: {err}", file=sys.stderr)
        try:
            log_size: int | None = os.stat(os.path.join(job.run_dir, LOG_NAME)).st_size
        except OSError:
            log_size = None
        self._broadcast(job.key, code, log_size, usage)

    def _broadcast(
        self, key: str, code: int, log_size: int | None, usage: dict[str, float] | None = None
    ) -> None:
        message = {"op": "exited", "key": key, "code": code, "log": log_size, "usage": usage}
        for client in list(self._clients.values()):
            self._send(client, message)


def _exit_record(
    code: int, ended: float | None = None, usage: dict[str, float] | None = None
) -> bytes:
    """The exit line; with ``usage``, the job tree's CPU seconds and peak RSS (KiB) too."""
    line = f"exit code={code} uptime={uptime_s() if ended is None else ended:.2f}"
    if usage is not None:
        line += f" cpu={usage['cpu']:.3f} maxrss={usage['maxrss']}"
    return f"{line}\n".encode()


def _prepare(run_dir: str, files: list[list[str]]) -> int | None:
    """Make the run directory, place the job's files and claim the attempt by creating its
    status file exclusively: the status file's descriptor, or None if it was claimed first."""
    _make_run_dir(run_dir)
    for src, name in files:
        _place_file(src, os.path.join(run_dir, name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
    try:
        return os.open(os.path.join(run_dir, STATUS_NAME), flags, 0o644)
    except FileExistsError:
        return None


def _pidfd_or_kill(pid: int) -> int | None:
    """A pidfd to learn of the job's end; without one (out of descriptors) it could never be
    waited for, so it is killed and reaped instead."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None


def _make_run_dir(run_dir: str) -> None:
    """The attempt's directory and its parent, the job's: two mkdir calls for a first attempt."""
    job_dir = os.path.dirname(run_dir)
    try:
        os.mkdir(job_dir)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(job_dir, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(run_dir)


def _place_file(src: str, dst: str) -> None:
    """A hard link to the submit-time snapshot (one syscall) where possible, else a copy."""
    try:
        os.link(src, dst)
    except FileExistsError:
        if not os.path.samefile(src, dst):
            shutil.copy2(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def listen(name: str) -> socket.socket | None:
    """The listening socket, or None if another shepherd already has the name."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            return None
        raise
    sock.listen(64)
    return sock


def main(argv: list[str]) -> None:
    name, ready_fd = argv[0], int(argv[1])
    listener = listen(address(name))
    if listener is None:  # another shepherd listens: the starter may connect to it
        os.write(ready_fd, b"taken\n")
        return
    if os.fork() != 0:
        # The starter reaps this process; the shepherd itself is nobody's child to wait for.
        os._exit(0)

    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    Shepherd(listener).run()


if __name__ == "__main__":
    main(sys.argv[1:])
