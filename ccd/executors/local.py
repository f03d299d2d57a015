"""Run attempts as local processes that outlive the daemon.

Jobs are started by the local shepherd (``shepherd.py``), a small process of their own that is
their parent, so a daemon restart neither kills them nor loses how they ended: the shepherd
claims each attempt, writes its ``status`` file as the wrapper does on remote hosts, and tells
every connected daemon of each end. A daemon restarted while jobs run connects to the same
shepherd and is told of their ends; jobs whose shepherd died (orphans, whose exit codes nobody
can collect any more) are watched through pidfds and end ``lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccd.errors import ExecutorError
from ccd.executors.base import (
    LOG_NAME,
    STATUS_NAME,
    Handle,
    HealthListener,
    HostHealth,
    Launch,
    StateListener,
    StatusRecord,
    exit_status,
    parse_status,
    result_env,
    wrapper_exit,
)
from ccd.executors.procfs import local_boot_time, same_process
from ccd.executors.shell import READ_MAX_BYTES, read_bytes
from ccd.executors.shepherd_link import ShepherdLink
from ccd.models import ExitStatus
from ccd.spec.model import HostSpec
from ccd.usage import Usage

_ALWAYS_OK = HostHealth()
# A status file exists but is still empty only between the exclusive create that claims an
# attempt and the write of its start record, microseconds apart; wait this long before
# calling it lost.
STARTING_GRACE_S = 1.0


@dataclass(slots=True)
class _Watch:
    """One attempt being watched. ``done`` resolves to its exit code as the shepherd told it,
    or to None: then its status file tells (an exit record, or none: lost)."""

    run_dir: Path
    done: asyncio.Future[int | None]
    pid: int | None = None
    link: ShepherdLink | None = None  # the shepherd that is the job's parent, while it runs
    starting: bool = False  # its spawn request is not answered yet
    pidfd: int | None = None  # an orphan's, watched directly
    usage: Usage | None = None  # what the shepherd measured, told with its exit


class LocalExecutor:
    """The ``local`` backend: jobs on this machine, each in a session of its own."""

    def __init__(self, host: str = "local") -> None:
        self.host = host
        self._watches: dict[str, _Watch] = {}
        self._links: dict[str, ShepherdLink] = {}
        # Final log sizes of attempts that just ended: the last read of a log that was read
        # to its end (or is empty) needs no open().
        self._final_log_sizes: dict[str, int] = {}
        self._link_lock = asyncio.Lock()

    @classmethod
    def create(cls, host: HostSpec, executors: Mapping[str, object]) -> LocalExecutor:
        return cls(host.name)

    def health(self) -> HostHealth:
        return _ALWAYS_OK  # this machine is always there

    def listen(self, on_state: StateListener, on_health: HealthListener) -> None:
        """Nothing to report: a local job runs the moment it starts."""

    async def start(self, launch: Launch) -> Handle:
        run_dir = launch.run_dir.absolute()
        key = _key(launch)
        request = spawn_request(key, launch, run_dir)
        for _ in range(2):  # once more if the shepherd was exiting as we asked
            link = await self._link(_runs_root(run_dir), start=True)
            assert link is not None
            watch = _Watch(run_dir, _future(), link=link, starting=True)
            # Registered before asking: the end of a short job is told right after the answer.
            self._watches[key] = watch
            try:
                answer = await link.request(request)
            except ConnectionError:
                del self._watches[key]
                if not (run_dir / STATUS_NAME).exists():
                    continue  # never claimed: nothing ran
                watch = await self._adopt(key, run_dir, _read_record(run_dir))
                return self._handle(launch, watch.pid)
            watch.starting = False
            return self._started(launch, watch, answer)
        raise ExecutorError(f"cannot start {key}: the local shepherd keeps going away")

    def _started(self, launch: Launch, watch: _Watch, answer: dict[str, Any]) -> Handle:
        if answer["op"] == "error":
            del self._watches[_key(launch)]
            raise ExecutorError(f"cannot start {_key(launch)}: {answer['message']}")
        if answer["op"] == "claimed":  # never runs: waiting reads the claim, and calls it lost
            watch.link = None
            _resolve(watch, None)
        else:
            watch.pid = answer["pid"]
        return self._handle(launch, watch.pid)

    async def wait(self, handle: Handle) -> ExitStatus:
        key = _key(handle)
        watch = self._watches.get(key)
        if watch is None:
            run_dir = handle.run_dir.absolute()
            watch = await self._adopt(key, run_dir, _read_record(run_dir))
        # Shielded: a cancelled waiter must not cancel the watch other waiters share.
        code = await asyncio.shield(watch.done)
        # Once ended, the status file alone answers any later wait or signal.
        if self._watches.get(key) is watch:
            del self._watches[key]
        if code is not None:
            return wrapper_exit(code, usage=watch.usage)
        return exit_status(_read_record(handle.run_dir))

    async def signal(self, handle: Handle, signum: int) -> None:
        # Sent from here, not by the shepherd, so that it also reaches orphans; the start
        # record's ticks tell the job from a later process that reuses its pid.
        record = _read_record(handle.run_dir)
        pid = record.pid
        if record.exit_code is None and pid is not None and same_process(pid, record):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signum)

    async def read_file(self, handle: Handle, name: str, limit: int) -> bytes:
        return _read_small(handle.run_dir / name, limit)

    async def read_log(self, handle: Handle, offset: int) -> bytes:
        key = _key(handle)
        final_size = self._final_log_sizes.get(key)
        if final_size is not None and offset >= final_size:
            del self._final_log_sizes[key]  # read to its end: no reader asks again
            return b""
        return read_bytes(handle.run_dir / LOG_NAME, offset, READ_MAX_BYTES)

    async def reattach(self, launch: Launch) -> Handle | None:
        run_dir = launch.run_dir.absolute()
        status_path = run_dir / STATUS_NAME
        text = _read_text(status_path)
        if text is None:
            if _claim(run_dir, status_path):
                return None
            text = _read_text(status_path) or ""
        text = await _await_start_record(status_path, text)
        record = parse_status(text, local_boot_time())
        if record.claimed and record.pid is None:
            return None
        watch = await self._adopt(_key(launch), run_dir, record)
        return self._handle(launch, watch.pid)

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
        self._links.clear()
        self._final_log_sizes.clear()
        for watch in self._watches.values():
            _unwatch_pidfd(watch)
            # Nobody will resolve these any more; waiters must not hang on a closed executor.
            watch.done.cancel()
        self._watches.clear()

    async def _link(self, runs_root: str, *, start: bool) -> ShepherdLink | None:
        """The connection to the shepherd of ``runs_root``; None if none runs and not
        ``start``."""
        link = self._links.get(runs_root)
        if link is not None and link.alive:
            return link
        async with self._link_lock:  # one connection (and one shepherd started) at a time
            link = self._links.get(runs_root)
            if link is None or not link.alive:
                link = await ShepherdLink.open(
                    Path(runs_root), start=start, on_exit=self._on_exit, on_lost=self._on_lost
                )
                if link is not None:
                    self._links[runs_root] = link
            return link

    async def _adopt(self, key: str, run_dir: Path, record: StatusRecord) -> _Watch:
        """Watch an attempt this executor did not start: through its shepherd if that still
        runs it, as an orphan if it runs without one, or not at all if it has ended."""
        watch = _Watch(run_dir, _future(), pid=record.pid)
        self._watches[key] = watch
        if record.exit_code is not None or record.pid is None:
            _resolve(watch, None)
            return watch
        link = await self._link(_runs_root(run_dir), start=False)
        if link is not None:
            watch.link = link  # before asking: it may end right after the answer
            with contextlib.suppress(ConnectionError):
                if (await link.request({"op": "watch", "key": key}))["op"] == "watching":
                    return watch
            watch.link = None
        # Unknown to the shepherd: it ended since we read its record, or its shepherd died.
        self._follow_orphan(watch)
        return watch

    def _follow_orphan(self, watch: _Watch) -> None:
        """Watch a job no shepherd will report on, by its pidfd, from its status record."""
        if watch.done.done() or watch.pidfd is not None:
            return
        record = _read_record(watch.run_dir)
        if record.exit_code is None and record.pid is not None:
            pidfd = _open_verified_pidfd(record.pid, record)
            if pidfd is not None:
                watch.pidfd = pidfd
                watch.done.get_loop().add_reader(pidfd, self._on_orphan_exit, watch)
                return
        _resolve(watch, None)

    def _on_orphan_exit(self, watch: _Watch) -> None:
        _unwatch_pidfd(watch)
        _resolve(watch, None)

    def _on_exit(self, key: str, code: int, log_size: int | None, usage: Usage | None) -> None:
        watch = self._watches.get(key)
        if watch is not None and watch.link is not None:
            watch.link = None
            watch.usage = usage
            if log_size is not None:
                self._final_log_sizes[key] = log_size
            _resolve(watch, code)

    def _on_lost(self, link: ShepherdLink) -> None:
        """The shepherd went away: its running jobs have no parent to record their ends."""
        for watch in self._watches.values():
            if watch.link is link and not watch.starting:
                watch.link = None
                self._follow_orphan(watch)

    def _handle(self, launch: Launch, pid: int | None) -> Handle:
        return Handle(
            workflow_id=launch.workflow_id,
            job=launch.job,
            attempt=launch.attempt,
            run_dir=launch.run_dir,
            pid=pid,
            host=self.host,
        )


def _key(attempt: Launch | Handle) -> str:
    return f"{attempt.workflow_id}/{attempt.job}/{attempt.attempt}"


def _runs_root(run_dir: Path) -> str:
    """``<state>/runs`` of ``<state>/runs/<workflow>/<job>/<attempt>``: one shepherd each.
    (A string operation: neither part below it can contain a separator, and this runs for
    every attempt.)"""
    return str(run_dir).rsplit(os.sep, 3)[0]


def _future() -> asyncio.Future[int | None]:
    return asyncio.get_running_loop().create_future()


def _resolve(watch: _Watch, code: int | None) -> None:
    if not watch.done.done():
        watch.done.set_result(code)


def _unwatch_pidfd(watch: _Watch) -> None:
    if watch.pidfd is not None:
        watch.done.get_loop().remove_reader(watch.pidfd)
        os.close(watch.pidfd)
        watch.pidfd = None


def spawn_request(key: str, launch: Launch, run_dir: Path) -> dict[str, Any]:
    """What the shepherd needs to prepare the run directory and start the job in it."""
    files = [] if launch.inline is not None else [[str(launch.script), launch.script.name]]
    files += [[str(source), source.name] for source in launch.inputs]
    env = dict(launch.env)
    env["CCD_WORKFLOW"] = launch.workflow_id
    env["CCD_JOB"] = launch.job
    env["CCD_ATTEMPT"] = str(launch.attempt)
    env["CCD_RUN_DIR"] = str(run_dir)
    env.update(result_env(str(run_dir)))
    return {
        "op": "spawn",
        "key": key,
        "dir": str(run_dir),
        "argv": local_argv(launch),
        "env": env,
        "files": files,
    }


def local_argv(launch: Launch) -> list[str]:
    """The job's command line as the shepherd runs it. An inline command is run as its own
    words when no shell is needed to read it (see `plain_words`), else it goes to ``sh -c``
    (no script file to create), with any arguments as its positional parameters (which a
    plain command cannot refer to)."""
    if launch.inline is None:
        return list(launch.argv)
    words = plain_words(launch.inline)
    if words is None or _exported_function(words[0], launch.env):
        return ["sh", "-c", launch.inline, "sh", *launch.argv[2:]]
    return words


def _exported_function(name: str, env: Mapping[str, str]) -> bool:
    """Whether bash (``sh`` on many clusters) would find ``name`` as a function exported to
    the job, as Lmod exports ``module``: only a shell can run that."""
    variable = f"BASH_FUNC_{name}%%"
    return variable in env or variable in os.environ


# Characters a shell reads as themselves everywhere in a word (no quoting, expansion,
# redirection, globbing, comment or separator), blanks between words, and white space around
# them (a YAML block ends in a newline).
_PLAIN_COMMAND = re.compile(r"\s*[\w./,:+@%=-]+(?:[ \t]+[\w./,:+@%=-]+)*\s*", re.ASCII)
# First words a shell runs itself, whose effect or output may differ from a program of the
# same name: the builtins of dash and bash (true and false excepted: their programs do the
# same) and reserved words made only of plain characters.
_SHELL_WORDS = frozenset(
    """. : [ alias bg bind break builtin caller case cd chdir command compgen complete
    compopt continue coproc declare dirs disown do done echo elif else enable esac eval exec
    exit export fc fg fi for function getopts hash help history if in jobs kill let local
    logout mapfile popd printf pushd pwd read readarray readonly return select set shift
    shopt source suspend test then time times trap type typeset ulimit umask unalias unset
    until wait while""".split()  # noqa: SIM905 (a list literal of 75 strings reads worse)
)


def plain_words(command: str) -> list[str] | None:
    """The words of a command that needs no shell, as GNU make decides it: plain characters
    only, and a first word that is neither a shell builtin nor an assignment. Running those
    words directly saves starting ``sh`` (a third of the cost of a short job) and does what
    ``sh -c`` would have done; None for any other command."""
    if not _PLAIN_COMMAND.fullmatch(command):
        return None
    words = command.split()
    if words[0] in _SHELL_WORDS or "=" in words[0]:
        return None
    return words


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


def _read_small(path: Path, limit: int) -> bytes:
    """Up to ``limit`` bytes of a small file (empty if there is none). Sized to the file:
    read(limit) would first make a buffer of the whole limit (a megabyte, for a few bytes of
    outputs); one byte more than the file has shows one that grew past the limit since."""
    try:
        with open(path, "rb") as f:
            return f.read(min(limit, os.fstat(f.fileno()).st_size + 1))
    except FileNotFoundError:
        return b""
