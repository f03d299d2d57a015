"""Run attempts as local processes that outlive the daemon, watched through pidfds.

Each attempt is ``sh wrapper.sh ARGV...`` started with ``posix_spawn`` in a new session, so
its process group holds the job and everything it starts, and neither a daemon restart nor
the daemon's terminal touches it. Exits are learnt from a pidfd registered with the event
loop: no thread per child (Python 3.11's default child watcher costs one), and the same
mechanism watches processes adopted after a restart, which are not our children.

Exit codes come from the ``status`` file the wrapper writes, never from ``waitpid`` alone,
so an attempt reads the same whether this daemon started it or an earlier one did.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ccd.errors import ExecutorError
from ccd.executors.base import (
    LOG_NAME,
    STATUS_NAME,
    WRAPPER_NAME,
    CommandResult,
    Handle,
    HealthListener,
    HostHealth,
    Launch,
    StateListener,
    StatusRecord,
    parse_status,
    wrapper_exit,
)
from ccd.models import ExitStatus
from ccd.specbase import HostSpec

READ_LOG_MAX_BYTES = 1 << 20
SHELL = "/bin/sh"
# A status file exists but is still empty only between the wrapper's exclusive create and its
# write of the start record, microseconds apart; wait this long before calling it lost.
STARTING_GRACE_S = 1.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# Float rounding in epoch seconds, far below the 1/100 s steps of the clocks compared.
_CLOCK_SLACK_S = 0.001

# The wrapper redirects its own output once it has claimed the attempt; until then nothing
# it prints may reach the daemon's terminal or journal.
_DEVNULL_STDIO = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
]

# Reset in the wrapper to their defaults. Python ignores SIGPIPE and SIGXFSZ, and a daemon
# started in the background or under nohup inherits SIGINT or SIGHUP ignored; an ignored
# signal stays ignored across exec and sh may not even trap it, so jobs would not die of
# a broken pipe and the wrapper could not record a cancellation.
_DEFAULT_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGPIPE,
    signal.SIGTERM,
    signal.SIGXFSZ,
)

_Key = tuple[str, str, int]


@functools.cache
def wrapper_text() -> bytes:
    """The wrapper script shipped with the package, read once per process."""
    return resources.files("ccd.executors").joinpath(WRAPPER_NAME).read_bytes()


@functools.cache
def local_boot_time() -> float | None:
    """Epoch seconds at which this machine booted: what the wrapper's ``uptime=`` counts from.

    This is the quantity ``/proc/stat`` reports as ``btime``, computed here from the clock and
    ``/proc/uptime`` because ``btime`` is truncated to whole seconds, which would put a job's
    start up to a second before the moment the daemon launched it."""
    try:
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _btime()
    return time.time() - uptime


def _btime() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def proc_start_ticks(pid: int) -> int | None:
    """Field 22 (starttime) of ``/proc/PID/stat``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: count from after its last ")".
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process(pid: int, record: StatusRecord) -> bool:
    """Whether ``pid`` is still the wrapper that wrote ``record``, not a later process that
    reuses its pid.

    With ``ticks`` recorded, the process start times must match exactly. Without, the
    process must have started no later than the wrapper's recorded start: the wrapper was
    alive then, so any other holder of its pid started after it died. (Both clocks count
    from boot in 1/100 s steps; a false match would need the pid space to wrap within one.)
    """
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return False
    if record.start_ticks is not None:
        return ticks == record.start_ticks
    boot_time = local_boot_time()
    if record.started_at is None or boot_time is None:
        return False
    return boot_time + ticks / _CLK_TCK <= record.started_at + _CLOCK_SLACK_S


def exit_status(record: StatusRecord, wait_status: int | None) -> ExitStatus:
    """How an attempt ended, from its status record and, if we reaped the wrapper, its
    ``waitpid`` status.

    An exit record is read by `wrapper_exit`. Without one the wrapper itself died (e.g.
    SIGKILL to the whole group) or never ran the job: ``code=None, reason="lost"``, with the
    signal that killed the wrapper if we reaped it."""
    if record.exit_code is not None:
        return wrapper_exit(record.exit_code)
    signum = None
    if wait_status is not None and os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
    return ExitStatus(code=None, signal=signum, reason="lost")


@dataclass(slots=True)
class _Watch:
    """One attempt being watched: ``done`` resolves to the wrapper's ``waitpid`` status (None
    if it was not our child or had ended before we looked)."""

    pid: int | None
    done: asyncio.Future[int | None]
    pidfd: int | None = None
    child: bool = False  # ours to reap; its pid cannot be reused until we do


class LocalExecutor:
    """The ``local`` backend: jobs on this machine, one session per attempt."""

    def __init__(self, host: str = "local") -> None:
        self.host = host
        self._watches: dict[_Key, _Watch] = {}
        # The last wrapper.sh written, from which later run directories get a hard link: one
        # link() instead of creating and writing a file (an inode allocation, which costs
        # up to a millisecond on a busy ext4).
        self._wrapper_source: Path | None = None

    @classmethod
    def create(cls, host: HostSpec, executors: Mapping[str, object]) -> LocalExecutor:
        return cls(host.name)

    def health(self) -> HostHealth:
        return HostHealth()  # this machine is always there

    def listen(self, on_state: StateListener, on_health: HealthListener) -> None:
        """Nothing to report: a local job runs the moment it starts."""

    async def start(self, launch: Launch) -> Handle:
        try:
            pid = self._spawn(launch)
        except OSError as err:
            raise ExecutorError(f"cannot start {_name(launch)}: {err}") from err
        watch = _Watch(pid=pid, done=asyncio.get_running_loop().create_future(), child=True)
        try:
            self._watch_pid(watch)
        except OSError as err:
            # Unwatched, it could never be waited for: undo the start rather than report a
            # job that the caller would then run a second time.
            _kill_and_reap(pid)
            raise ExecutorError(f"cannot watch {_name(launch)}: {err}") from err
        self._watches[_key(launch)] = watch
        return self._handle(launch, pid)

    async def wait(self, handle: Handle) -> ExitStatus:
        key = _key(handle)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._adopt(_read_record(handle.run_dir))
            self._watches[key] = watch
        # Shielded: a cancelled waiter must not cancel the watch other waiters share.
        wait_status = await asyncio.shield(watch.done)
        # Once ended, the status file alone answers any later wait or signal.
        if self._watches.get(key) is watch:
            del self._watches[key]
        return exit_status(_read_record(handle.run_dir), wait_status)

    async def signal(self, handle: Handle, signum: int) -> None:
        pid = self._signallable_pid(handle)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signum)

    async def read_log(self, handle: Handle, offset: int) -> bytes:
        return _read_bytes(handle.run_dir / LOG_NAME, offset, READ_LOG_MAX_BYTES)

    async def reattach(self, launch: Launch) -> Handle | None:
        status_path = launch.run_dir / STATUS_NAME
        text = _read_text(status_path)
        if text is None:
            if _claim(launch.run_dir, status_path):
                return None
            text = _read_text(status_path) or ""
        text = await _await_start_record(status_path, text)
        record = parse_status(text, local_boot_time())
        if record.claimed and record.pid is None:
            return None
        self._watches[_key(launch)] = self._adopt(record)
        return self._handle(launch, record.pid)

    async def close(self) -> None:
        for watch in self._watches.values():
            self._unwatch_pid(watch)
            # Nobody will resolve these any more; waiters must not hang on a closed executor.
            watch.done.cancel()
        self._watches.clear()

    def _spawn(self, launch: Launch) -> int:
        """Prepare the run directory and start the wrapper in a new session; its pid.

        Blocking file system calls from a coroutine, on purpose: on a local disk each takes
        microseconds, less than a hop to a worker thread would."""
        run_dir = launch.run_dir.absolute()
        _make_dir(run_dir)
        wrapper = run_dir / WRAPPER_NAME
        self._wrapper_source = _place_wrapper(wrapper, self._wrapper_source)
        if launch.inline is not None:
            _write_new_file(run_dir / launch.script.name, launch.inline.encode(), 0o644)
        else:
            _place_script(launch.script, run_dir / launch.script.name)
        for source in launch.inputs:
            _place_script(source, run_dir / source.name)
        return os.posix_spawn(
            SHELL,
            [b"sh", bytes(wrapper), *map(os.fsencode, launch.argv)],
            _job_env(launch, run_dir),
            file_actions=_DEVNULL_STDIO,
            setsid=True,
            setsigdef=_DEFAULT_SIGNALS,
            setsigmask=(),
        )

    def _handle(self, launch: Launch, pid: int | None) -> Handle:
        return Handle(
            workflow_id=launch.workflow_id,
            job=launch.job,
            attempt=launch.attempt,
            run_dir=launch.run_dir,
            pid=pid,
            host=self.host,
        )

    def _adopt(self, record: StatusRecord) -> _Watch:
        """Watch an attempt this executor did not start, if its wrapper is still running;
        otherwise a watch that is already done (wait then reads the final status)."""
        done = asyncio.get_running_loop().create_future()
        watch = _Watch(pid=record.pid, done=done)
        if record.exit_code is None and record.pid is not None:
            pidfd = _open_verified_pidfd(record.pid, record)
            if pidfd is not None:
                watch.pidfd = pidfd
                self._watch_pid(watch)
                return watch
        done.set_result(None)
        return watch

    def _watch_pid(self, watch: _Watch) -> None:
        assert watch.pid is not None
        if watch.pidfd is None:
            watch.pidfd = os.pidfd_open(watch.pid)
        loop = watch.done.get_loop()
        loop.add_reader(watch.pidfd, self._on_exit, watch)

    def _on_exit(self, watch: _Watch) -> None:
        self._unwatch_pid(watch)
        wait_status = None
        if watch.child and watch.pid is not None:
            # Already a zombie, so this does not block.
            with contextlib.suppress(ChildProcessError):
                wait_status = os.waitpid(watch.pid, 0)[1]
        if not watch.done.done():
            watch.done.set_result(wait_status)

    def _unwatch_pid(self, watch: _Watch) -> None:
        if watch.pidfd is not None:
            watch.done.get_loop().remove_reader(watch.pidfd)
            os.close(watch.pidfd)
            watch.pidfd = None

    def _signallable_pid(self, handle: Handle) -> int | None:
        """The wrapper's pid if it still runs, checked against pid reuse."""
        watch = self._watches.get(_key(handle))
        if watch is not None and watch.child and not watch.done.done():
            return watch.pid  # an unreaped child's pid cannot have been reused
        record = _read_record(handle.run_dir)
        if record.exit_code is not None or record.pid is None:
            return None
        return record.pid if same_process(record.pid, record) else None


def _key(attempt: Launch | Handle) -> _Key:
    return (attempt.workflow_id, attempt.job, attempt.attempt)


def _name(launch: Launch) -> str:
    return f"{launch.workflow_id}/{launch.job}/{launch.attempt}"


def _kill_and_reap(pid: int) -> None:
    # Blocks only as long as a SIGKILLed process takes to die.
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _make_dir(path: Path) -> None:
    """The attempt's directory and its parent, the job's: two mkdir calls in the usual case
    (a first attempt), where makedirs would stat and retry its way up with four."""
    try:
        path.parent.mkdir()
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir()


def _place_wrapper(dst: Path, source: Path | None) -> Path:
    """Put the wrapper at ``dst``, as a hard link to ``source`` if possible (gone, another
    file system or too many links: write it afresh); the source for the next one.

    The copies share one read-only inode, so an existing ``dst`` is replaced, never
    rewritten in place: a running wrapper may be reading it."""
    if source is not None:
        try:
            os.link(source, dst)
            return source
        except FileExistsError:
            dst.unlink()
            return _place_wrapper(dst, source)
        except OSError:
            pass
    try:
        _write_new_file(dst, wrapper_text(), 0o444)
    except FileExistsError:
        dst.unlink()
        _write_new_file(dst, wrapper_text(), 0o444)
    return dst


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _place_script(src: Path, dst: Path) -> None:
    """Put the script snapshot in the run directory: a hard link (one syscall) if the file
    system allows, else a copy."""
    try:
        os.link(src, dst)
    except FileExistsError:
        if not src.samefile(dst):
            shutil.copy2(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _job_env(launch: Launch, run_dir: Path) -> dict[bytes, bytes]:
    # Bytes throughout: copying os.environb skips decoding every variable only for
    # posix_spawn to encode it again.
    env = dict(os.environb)
    for name, value in launch.env.items():
        env[os.fsencode(name)] = os.fsencode(value)
    env[b"CCD_WORKFLOW"] = os.fsencode(launch.workflow_id)
    env[b"CCD_JOB"] = os.fsencode(launch.job)
    env[b"CCD_ATTEMPT"] = b"%d" % launch.attempt
    env[b"CCD_RUN_DIR"] = bytes(run_dir)
    return env


def _read_bytes(path: Path, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


def _read_text(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _read_record(run_dir: Path) -> StatusRecord:
    text = _read_text(run_dir / STATUS_NAME)
    return parse_status(text or "", local_boot_time())


def _claim(run_dir: Path, status_path: Path) -> bool:
    """Create the status file first, so that a wrapper started late refuses to run. False if
    the wrapper created it first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(status_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, b"claimed\n")
    finally:
        os.close(fd)
    return True


async def _await_start_record(status_path: Path, text: str) -> str:
    """Re-read a status file caught between the wrapper's exclusive create and its write."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTING_GRACE_S
    delay_s = 0.001
    while not text and loop.time() < deadline:
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, 0.1)
        text = _read_text(status_path) or ""
    return text


def _open_verified_pidfd(pid: int, record: StatusRecord) -> int | None:
    """A pidfd for ``pid`` if it is still the process that wrote the status file.

    The pidfd is opened before the check, so if the check passes the pidfd refers to that
    process even if it exits and its pid is reused a moment later."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if not same_process(pid, record):
        os.close(pidfd)
        return None
    return pidfd


class LocalShell:
    """The `Shell` of this machine: subprocesses and plain files."""

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return CommandResult(proc.returncode, out, err)

    async def write_files(self, files: Mapping[str, bytes], *, mode: int = 0o644) -> None:
        await asyncio.to_thread(_write_files, files, mode)

    async def read_file(self, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        return _read_bytes(_expand(path), offset, limit)


def _expand(path: str) -> Path:
    return Path(path).expanduser()


def _write_files(files: Mapping[str, bytes], mode: int) -> None:
    for name, data in files.items():
        path = _expand(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
