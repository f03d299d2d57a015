"""Run attempts on hosts reached over SSH: one asyncssh connection per host, kept up.

Every job and workflow of a host shares its one connection. Commands run as channels on it,
at most ``max_sessions`` at once (kept below sshd's MaxSessions) and no more than
``commands_per_s``; files move over one SFTP channel opened with the connection. Nothing is
installed on the host: the wrapper and the job's script go up inside the launch command, its
``inputs:`` over SFTP. Jobs start detached in their own session and write the same status file
as local ones, so they outlive the connection and the daemon: after a lost connection or a
daemon restart the status files say what happened, and nothing runs twice.

Few commands whatever the number of jobs: attempts starting together share one launch
command, and one poller per host reads every watched attempt's status, liveness and log size
with one command per round (see `ssh_watch`). A lost connection is re-opened with capped
exponential backoff and jitter; meanwhile the host's health says "connecting", then
"unreachable" with the reason, and its jobs wait rather than fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shlex
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import structlog
from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # asyncssh names cryptography's DSA classes, which warn on every import since
    # cryptography 48. Not ours to fix, and no user can act on it: keep it off stderr.
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

from ccd.errors import ExecutorError
from ccd.executors.base import (
    LOG_NAME,
    STATUS_NAME,
    Handle,
    HealthListener,
    HostHealth,
    Launch,
    StateListener,
    check_outputs,
    exit_status,
    parse_status,
    wrapper_text,
)
from ccd.executors.batching import Batcher, Budget
from ccd.executors.shell import READ_MAX_BYTES, CommandResult
from ccd.executors.ssh_remote import (
    Launched,
    PollItem,
    PollResult,
    RemoteLaunch,
    ccd_env,
    claim_script,
    job_env,
    kill_script,
    launch_script,
    parse_claim,
    parse_launch,
    parse_poll,
    poll_script,
    rel_run_dir,
    resolve_root,
    script_bytes,
)
from ccd.executors.ssh_watch import Disconnected, Poller
from ccd.models import ExitStatus
from ccd.spec.hosts import SshOptions
from ccd.spec.model import HostSpec

log = structlog.get_logger("ccd.executors.ssh")

T = TypeVar("T")

FINAL_SIZES_KEPT = 4096
LAUNCH_BATCH_MAX = 200
LAUNCHES_IN_FLIGHT = 2
STARTING_GRACE_S = 1.0  # see local.STARTING_GRACE_S
RETRY_PAUSE_MIN_S = 0.05  # between retries of an idempotent command after a lost connection
RETRY_PAUSE_MAX_S = 2.0
# Errors that mean "try again later", not "this request is wrong": the connection went, or
# the server would not open a channel just now.
_TRANSIENT = (asyncssh.DisconnectError, asyncssh.ChannelOpenError, ConnectionError)


class SshConnection:
    """The one connection to a host, re-opened whenever it drops, with the host's health."""

    reconnect_base_s = 0.5
    reconnect_cap_s = 30.0
    unreachable_after = 3  # failed attempts in a row before the host is called unreachable

    def __init__(self, name: str, opts: SshOptions) -> None:
        self.name = name
        self.opts = opts
        self.health = HostHealth("connecting", "not connected yet")
        self.on_health: HealthListener | None = None
        self.connections = 0  # opened so far (tests and the benchmark count them)
        self.root = ""  # the remote run-dir root, ~ expanded (known once connected)
        self.home = ""
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # One session is the SFTP channel; commands share the rest.
        self._budget = Budget(opts.commands_per_s, concurrency=max(1, opts.max_sessions - 1))

    @property
    def where(self) -> str:
        user = f"{self.opts.user}@" if self.opts.user else ""
        return f"ssh host '{self.name}' ({user}{self.opts.hostname}:{self.opts.port})"

    def start(self) -> None:
        """Begin connecting (in the background), if not yet; needs a running loop."""
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._keep_up())

    async def up(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        """The live connection and its SFTP client, waiting (indefinitely) for one."""
        self.start()
        while True:
            if self._closed:
                raise ExecutorError(f"{self.where}: the executor is closed")
            conn, sftp = self._conn, self._sftp
            if conn is not None and sftp is not None and not conn.is_closed():
                return conn, sftp
            if conn is not None:
                self._up.clear()  # dropped; _keep_up has not noticed yet
            await self._up.wait()

    async def run(
        self, command: str, stdin: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        """Run ``command`` (a shell command line) on the host; Disconnected if the connection
        dropped under it, TimeoutError after ``timeout_s`` (the channel is then closed)."""
        conn, _ = await self.up()
        async with self._budget.slot():
            return await self._guard(conn, self._run(conn, command, stdin, timeout_s))

    async def sftp(self, call: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        """``call(sftp)`` on the live SFTP client; Disconnected if the connection dropped."""
        conn, sftp = await self.up()
        return await self._guard(conn, call(sftp))

    def expand(self, path: str) -> str:
        return self.home + path[1:] if path == "~" or path.startswith("~/") else path

    async def close(self) -> None:
        self._closed = True
        self._up.set()  # waiters wake to find it closed
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = self._sftp = None

    async def _run(
        self,
        conn: asyncssh.SSHClientConnection,
        command: str,
        stdin: bytes | None,
        timeout_s: float | None,
    ) -> CommandResult:
        process = await conn.create_process(command, input=stdin or b"", encoding=None)
        try:
            result = await process.wait(timeout=timeout_s)
        except asyncssh.TimeoutError as err:
            raise TimeoutError(f"{command!r} on {self.where} timed out") from err
        finally:
            process.close()
        if result.exit_status is None and result.exit_signal is None:
            raise Disconnected(f"{self.where}: no exit status for {command!r}")
        code = result.returncode if result.returncode is not None else -1
        stdout, stderr = result.stdout, result.stderr
        assert isinstance(stdout, bytes) and isinstance(stderr, bytes)
        return CommandResult(code, stdout, stderr)

    async def _guard(self, conn: asyncssh.SSHClientConnection, work: Awaitable[T]) -> T:
        """Tell a dropped connection (Disconnected: retry later) from a failed request."""
        try:
            return await work
        except TimeoutError:
            raise
        except (OSError, asyncssh.Error) as err:
            if conn.is_closed() or isinstance(err, _TRANSIENT):
                raise Disconnected(f"{self.where}: {err or type(err).__name__}") from err
            raise

    async def _keep_up(self) -> None:
        failures = 0
        while True:
            try:
                conn = await self._open()
            except Exception as err:  # any failure is a reason to report, not a crash
                failures = self._failed(err, failures)
                await asyncio.sleep(self._backoff_s(failures))
                continue
            failures = 0
            self._set_health(HostHealth("ok"))
            log.info("ssh_connected", host=self.name, connections=self.connections)
            self._up.set()
            await conn.wait_closed()
            self._up.clear()
            self._conn = self._sftp = None
            self._set_health(HostHealth("connecting", "connection lost; reconnecting"))
            log.warning("ssh_connection_lost", host=self.name)

    async def _open(self) -> asyncssh.SSHClientConnection:
        opts = self.opts
        conn = await asyncssh.connect(opts.hostname, **self._connect_options())
        try:
            sftp = await conn.start_sftp_client()
            home = await sftp.realpath(".")
            self.root = resolve_root(opts.root, home)
        except BaseException:
            conn.close()
            raise
        self._conn, self._sftp, self.home = conn, sftp, home
        self.connections += 1
        return conn

    def _connect_options(self) -> dict[str, Any]:
        opts = self.opts
        options: dict[str, Any] = {
            "port": opts.port,
            "connect_timeout": opts.connect_timeout_s,
            "login_timeout": opts.connect_timeout_s,
            "keepalive_interval": opts.keepalive_s,
        }
        if opts.user is not None:
            options["username"] = opts.user
        if opts.identity is not None:
            options["client_keys"] = [str(Path(opts.identity).expanduser())]
        if opts.insecure_skip_host_key_check:
            options["known_hosts"] = None  # the explicit opt-out
        elif opts.known_hosts is not None:
            options["known_hosts"] = str(Path(opts.known_hosts).expanduser())
        return options  # anything unset: ~/.ssh/config, then asyncssh's (OpenSSH's) defaults

    def _failed(self, err: BaseException, failures: int) -> int:
        failures += 1
        reason = self._reason(err)
        if isinstance(err, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied):
            failures = max(failures, self.unreachable_after)  # retrying will not fix these
        state = "unreachable" if failures >= self.unreachable_after else "connecting"
        if self.health != HostHealth(state, reason):
            log.warning("ssh_connect_failed", host=self.name, state=state, reason=reason)
        self._set_health(HostHealth(state, reason))
        return failures

    def _reason(self, err: BaseException) -> str:
        if isinstance(err, asyncssh.HostKeyNotVerifiable):
            known = self.opts.known_hosts or "~/.ssh/known_hosts"
            return (
                f"{self.where}: host key not verified ({err.reason}): add the host's key "
                f"to {known}, or set insecure_skip_host_key_check explicitly"
            )
        if isinstance(err, asyncssh.PermissionDenied):
            return f"{self.where}: permission denied (check user and identity)"
        if isinstance(err, TimeoutError):
            return f"{self.where}: connection timed out"
        detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        if isinstance(err, OSError) and err.filename:
            detail = f"{detail}: {err.filename}"
        return f"{self.where}: {detail or type(err).__name__}"

    def _backoff_s(self, failures: int) -> float:
        delay = min(self.reconnect_cap_s, self.reconnect_base_s * 2 ** (failures - 1))
        return random.uniform(delay / 2, delay)

    def _set_health(self, health: HostHealth) -> None:
        if health != self.health:
            self.health = health
            if self.on_health is not None:
                try:
                    self.on_health()
                except Exception:  # a listener's bug must not stop the reconnecting
                    log.exception("ssh_health_listener_failed", host=self.name)


class SshShell:
    """The `Shell` of an ssh host, over its shared connection (Slurm's `via:` uses it)."""

    def __init__(self, conn: SshConnection) -> None:
        self._conn = conn

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        return await self._conn.run(shlex.join(argv), stdin, timeout_s)

    async def write_files(self, files: Mapping[str, bytes], *, mode: int = 0o644) -> None:
        async def write(sftp: asyncssh.SFTPClient) -> None:
            for name, data in files.items():
                path = self._conn.expand(name)
                await sftp.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
                async with sftp.open(path, "wb") as f:
                    await f.write(data)
                await sftp.chmod(path, mode)

        await self._conn.sftp(write)

    async def read_file(self, path: str, offset: int = 0, limit: int = READ_MAX_BYTES) -> bytes:
        return await self._conn.sftp(
            lambda sftp: _read(sftp, self._conn.expand(path), offset, limit)
        )


async def _read(sftp: asyncssh.SFTPClient, path: str, offset: int, limit: int) -> bytes:
    try:
        async with sftp.open(path, "rb") as f:
            # Never ask past the end: asyncssh splits a large read into parallel block reads,
            # and those beyond EOF fail (each logged as an unretrieved task error).
            size = (await f.stat()).size or 0
            if offset >= size:
                return b""
            await f.seek(offset)
            data = await f.read(min(limit, size - offset))
    except asyncssh.SFTPNoSuchFile:
        return b""
    assert isinstance(data, bytes)
    return data


class SshExecutor:
    """The ``ssh`` backend: jobs on one host, all over its one connection."""

    def __init__(self, name: str, opts: SshOptions) -> None:
        self.host = name
        self.conn = SshConnection(name, opts)
        self.shell = SshShell(self.conn)
        self._launcher: Batcher[RemoteLaunch, Launched] = Batcher(
            self._launch_batch,
            name=f"ssh-launch-{name}",
            max_batch=LAUNCH_BATCH_MAX,
            max_inflight=LAUNCHES_IN_FLIGHT,
        )
        self._poller = Poller(self._poll)
        self._outputs: dict[str, tuple[str, ...]] = {}  # run dir -> output globs
        # Log sizes the poller saw as attempts ended, for the final read of their logs.
        self._final_size: OrderedDict[str, int] = OrderedDict()

    @classmethod
    def create(cls, host: HostSpec, executors: Mapping[str, object]) -> SshExecutor:
        if not isinstance(host.options, SshOptions):
            raise ExecutorError(f"host '{host.name}' has no ssh options")
        return cls(host.name, host.options)

    def health(self) -> HostHealth:
        with contextlib.suppress(RuntimeError):  # RuntimeError: no running loop
            self.conn.start()  # asking is what first brings a host up
        return self.conn.health

    def listen(self, on_state: StateListener, on_health: HealthListener) -> None:
        self.conn.on_health = on_health

    async def start(self, launch: Launch) -> Handle:
        rel = rel_run_dir(launch.run_dir)
        problems = check_outputs(launch.outputs)
        if problems:
            raise ExecutorError("; ".join(problems))
        # A small local read (the script's snapshot), blocking on purpose: a thread hop would
        # cost more. The local run dir is made only when outputs come back to it.
        script = script_bytes(launch)
        await self.conn.up()  # the remote root is known from here on
        remote_dir = f"{self.conn.root}/{rel}"
        uploads = [(path, path.name) for path in launch.inputs]
        if script is None:
            uploads.append((launch.script, launch.script.name))
        if uploads:
            await self._retrying(lambda: self.conn.sftp(lambda s: _upload(s, remote_dir, uploads)))
        env = job_env(launch.env, ccd_env(launch, remote_dir))
        remote = RemoteLaunch(remote_dir, launch.script.name, script, launch.argv, env)
        launched = await self._launcher.submit(remote)
        if launched.outcome == "failed":
            raise ExecutorError(f"cannot start {rel} on {self.conn.where}: {launched.reason}")
        self._outputs[rel] = launch.outputs
        self._poller.watch(rel, launched.pid)
        return self._handle(launch, launched.pid)

    async def wait(self, handle: Handle) -> ExitStatus:
        rel = rel_run_dir(handle.run_dir)
        watch = self._poller.get(rel) or self._poller.watch(rel, handle.pid)
        # Shielded: a cancelled waiter must not cancel the watch other waiters share.
        status = exit_status(await asyncio.shield(watch.done))
        if watch.log_size is not None:  # measured after the exit record: the final size
            self._final_size[rel] = watch.log_size
            while len(self._final_size) > FINAL_SIZES_KEPT:
                self._final_size.popitem(last=False)
        outputs = self._outputs.pop(rel, ())
        if status.ok and outputs:
            problem = await self._fetch_outputs(rel, handle.run_dir, outputs)
            if problem is not None:
                return dataclasses.replace(status, reason=problem)
        return status

    async def signal(self, handle: Handle, signum: int) -> None:
        rel = rel_run_dir(handle.run_dir)
        await self.conn.up()
        path = f"{self.conn.root}/{rel}/{STATUS_NAME}"
        text = await self._retrying(lambda: self.shell.read_file(path))
        record = parse_status(text.decode("utf-8", "replace"))
        watch = self._poller.get(rel)
        pid = record.pid or handle.pid or (watch.pid if watch else None)
        if record.exit_code is not None or pid is None:
            return
        script = kill_script(pid, record.start_ticks, signum)
        await self._retrying(lambda: self.conn.run("sh -s", script))

    async def read_file(self, handle: Handle, name: str, limit: int) -> bytes:
        await self.conn.up()
        path = f"{self.conn.root}/{rel_run_dir(handle.run_dir)}/{name}"
        return await self._retrying(lambda: self.shell.read_file(path, 0, limit))

    async def read_log(self, handle: Handle, offset: int) -> bytes:
        """New log bytes; empty while the host is away (the next read catches up)."""
        rel = rel_run_dir(handle.run_dir)
        watch = self._poller.get(rel)
        size = watch.log_size if watch is not None else self._final_size.pop(rel, None)
        if size is not None and offset >= size:
            return b""  # the last poll saw nothing new: no round trip
        if self.conn.health.state != "ok":
            return b""
        path = f"{self.conn.root}/{rel}/{LOG_NAME}"
        try:
            return await self.shell.read_file(path, offset)
        except Disconnected:
            return b""

    async def reattach(self, launch: Launch) -> Handle | None:
        rel = rel_run_dir(launch.run_dir)
        await self.conn.up()
        script = claim_script(f"{self.conn.root}/{rel}")
        loop = asyncio.get_running_loop()
        deadline, delay_s = loop.time() + STARTING_GRACE_S, 0.01
        while True:
            result = await self._retrying(lambda: self.conn.run("sh -s", script))
            outcome, text = parse_claim(result.stdout.decode("utf-8", "replace"))
            if outcome == "error":
                raise ExecutorError(f"cannot read {rel} on {self.conn.where}")
            if outcome == "claimed" or text or loop.time() > deadline:
                break
            await asyncio.sleep(delay_s)  # caught between the wrapper's create and write
            delay_s = min(delay_s * 2, 0.2)
        record = parse_status(text)
        if outcome == "claimed" or (record.claimed and record.pid is None):
            return None
        self._outputs[rel] = launch.outputs
        self._poller.watch(rel, record.pid)
        return self._handle(launch, record.pid)

    async def close(self) -> None:
        await self._poller.close()
        await self._launcher.close()
        await self.conn.close()

    def _handle(self, launch: Launch, pid: int | None) -> Handle:
        return Handle(
            launch.workflow_id, launch.job, launch.attempt, launch.run_dir, pid, self.host
        )

    async def _launch_batch(self, batch: list[RemoteLaunch]) -> list[Launched]:
        """One command starts the batch; run again whole if the connection drops (the
        status-file guard in the script keeps each attempt to one start)."""
        script = launch_script(batch, wrapper_text())
        result = await self._retrying(lambda: self.conn.run("sh -s", script))
        return parse_launch(result.stdout.decode("utf-8", "replace"), len(batch))

    async def _poll(self, items: list[PollItem]) -> PollResult:
        await self.conn.up()
        script = poll_script(self.conn.root, items)
        result = await self._retrying(lambda: self.conn.run("sh -s", script))
        return parse_poll(result.stdout.decode("utf-8", "surrogateescape"))

    async def _fetch_outputs(
        self, rel: str, local_dir: Path, patterns: tuple[str, ...]
    ) -> str | None:
        remote_dir = f"{self.conn.root}/{rel}"
        try:
            await self._retrying(
                lambda: self.conn.sftp(lambda s: _download(s, remote_dir, local_dir, patterns))
            )
        except (OSError, asyncssh.Error) as err:
            return f"outputs not fetched from {self.host}: {err}"
        return None

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` again after each lost connection (or refused channel), once the
        host is back; paced, in case the connection stays up but refuses channels."""
        pause_s = RETRY_PAUSE_MIN_S
        while True:
            try:
                return await attempt()
            except Disconnected as err:
                log.info("ssh_retry", host=self.host, error=str(err))
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, RETRY_PAUSE_MAX_S)
            await self.conn.up()


async def _upload(
    sftp: asyncssh.SFTPClient, remote_dir: str, files: list[tuple[Path, str]]
) -> None:
    await sftp.makedirs(remote_dir, exist_ok=True)
    if await sftp.exists(f"{remote_dir}/{STATUS_NAME}"):
        return  # started already (this is a retry): its files are in place and in use
    for local, name in files:
        await sftp.put(str(local), f"{remote_dir}/{name}", recurse=True, preserve=True)


async def _download(
    sftp: asyncssh.SFTPClient, remote_dir: str, local_dir: Path, patterns: tuple[str, ...]
) -> None:
    for pattern in patterns:
        try:
            paths = await sftp.glob(f"{remote_dir}/{pattern}")
        except asyncssh.SFTPNoSuchFile:
            paths = []
        if not paths:  # a declared output that is not there: the job did not do its work
            raise OSError(f"no file matches '{pattern}'")
        for path in paths:
            found = PurePosixPath(os.fsdecode(path))
            target = local_dir / found.relative_to(remote_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            await sftp.get(path, str(target), recurse=True, preserve=True)
