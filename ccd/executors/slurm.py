"""Run attempts as Slurm batch jobs, locally (``via: local``) or through an ssh host's shell.

Each attempt gets a generated batch script (``job.sbatch``: ``#SBATCH`` lines from its
resources, then ``exec sh wrapper.sh ARGV...``) in its run directory, submitted with
``sbatch --parsable``. The same wrapper and status file as on other hosts record start and
exit; Slurm's own word is needed only for jobs without an exit record (still queued, running,
or killed from outside: walltime, memory, node failure, preemption, scancel).

Jobs are named by a tag, ``ccd:<workflow>:<job>:<attempt>`` (":" is outside the name rule,
so tags never collide), which is how a restarted daemon finds a job whose id it never
recorded: no attempt is ever submitted twice. Run directories: with ``via: local`` the
attempt's own run dir (under the daemon's state dir, which the compute nodes must see, as a
home directory usually is); through ssh, ``<root>/<workflow>/<job>/<attempt>`` on the cluster.

One poller per cluster: each round reads the watched jobs' status files (one command), asks
``squeue`` once about every job without a clean exit record, and ``sacct`` once about those
that left squeue. The interval doubles from ``poll_interval_min_s`` up to
``poll_interval_s`` while nothing changes and resets on any change or submission; every
Slurm command of the executor goes through one budget (concurrency and rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from ccd.errors import ExecutorError
from ccd.executors import slurm_parse as sp
from ccd.executors.base import (
    LOG_NAME,
    STATUS_NAME,
    WRAPPER_NAME,
    Handle,
    HealthListener,
    HostHealth,
    Launch,
    RemoteHost,
    StateListener,
    StatusRecord,
    check_outputs,
    parse_status,
    wrapper_text,
)
from ccd.executors.batching import Batcher, Budget, Pacer
from ccd.executors.shell import CommandResult, LocalShell, Shell
from ccd.executors.slurm_parse import BATCH_NAME, cluster_run_dir, job_tag, render_batch
from ccd.models import ExitStatus
from ccd.spec.hosts import Resources, SlurmOptions
from ccd.spec.model import HostSpec

# render_batch and friends live with the other pure Slurm text in ccd.executors.slurm_parse.
__all__ = ["SlurmExecutor", "check_limits", "cluster_run_dir", "job_tag", "render_batch"]

log = structlog.get_logger("ccd.slurm")

_Key = tuple[str, str, int]
# Set inside the poller's task: its Slurm commands are counted per round.
_POLLING: ContextVar[bool] = ContextVar("ccd_slurm_polling", default=False)


async def check_limits(shell: Shell, resources: Resources, partition: str | None) -> list[str]:
    """Problems that would keep a job with ``resources`` from ever running in ``partition``
    (None: the cluster's default), from ``scontrol show partition`` and ``sinfo``."""
    parts_out = await shell.run(["scontrol", "show", "partition", "-o"], timeout_s=30)
    nodes_out = await shell.run(["sinfo", "-h", "-N", "-o", sp.SINFO_NODE_FORMAT], timeout_s=30)
    if parts_out.returncode != 0 or nodes_out.returncode != 0:
        err = (parts_out.stderr or nodes_out.stderr).decode(errors="replace").strip()
        return [f"cannot read the cluster's limits: {err}"]
    parts = sp.parse_partitions(parts_out.stdout.decode())
    name = partition or next((p.name for p in parts.values() if p.default), None)
    if name is None or name not in parts:
        return [f"partition '{name}' does not exist (known: {', '.join(sorted(parts))})"]
    return sp.limit_problems(
        resources, parts[name], sp.parse_sinfo_nodes(nodes_out.stdout.decode())
    )


@dataclass(eq=False, slots=True)
class _Watch:
    handle: Handle
    run_dir: str
    done: asyncio.Future[ExitStatus]
    record: StatusRecord = field(default_factory=StatusRecord)
    shown: tuple[str, str | None] | None = None  # the last state told to the listener
    never: str | None = None  # the pending reason under which Slurm will never start it


class SlurmExecutor:
    """The ``slurm`` backend: one cluster, reached through a `Shell`."""

    SBATCH = sp.SBATCH
    SQUEUE = ("squeue", "-h", "-t", "all", "-O", sp.SQUEUE_FIELDS)
    SACCT = ("sacct", "-X", "-n", "-P", "-o", sp.SACCT_FIELDS)
    SACCT_NAME_WINDOW = ("-S", "now-30days")  # sacct without -j only looks back to midnight
    SCANCEL = ("scancel",)
    READ_STATUS = (
        "sh",
        "-c",
        'for f; do [ -f "$f" ] && { printf "%s\\0" "$f"; cat -- "$f"; '
        'printf "\\0"; }; done; exit 0',
        "sh",
    )
    CLAIM = ("sh", "-c", 'mkdir -p -- "$1" && set -C && printf "claimed\\n" > "$1/status"', "sh")
    HOME = ("sh", "-c", 'printf %s "$HOME"')
    PING = ("sinfo", "-h", "-o", "%a")  # asks slurmctld: is it back?
    # The files each pattern matches, NUL-separated; a pattern that matches none, after a \1.
    LIST_FILES = (
        "sh",
        "-c",
        'cd "$1" || exit 1; shift; for p; do m=; for f in $p; do '
        '[ -f "$f" ] && printf "%s\\0" "$f" && m=1; done; '
        '[ -n "$m" ] || printf "\\001%s\\0" "$p"; done; exit 0',
        "sh",
    )
    SUBMIT_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)  # then the start fails
    NO_ACCOUNTING_RE = re.compile(r"accounting storage is disabled", re.IGNORECASE)
    UNREACHABLE_RE = re.compile(
        r"Unable to contact slurm controller|Socket timed out", re.IGNORECASE
    )
    INVALID_ID_RE = re.compile(r"Invalid job id specified")
    COMMANDS_PER_S = 20.0
    COMMAND_BURST = 40.0
    MAX_CONCURRENT_COMMANDS = 4
    CHUNK = 500  # job ids or names per command line
    COMMAND_TIMEOUT_S = 60.0
    LOOKUP_WINDOW_S = 0.02  # reattaches arriving within this share one squeue
    FINISHED_CACHE = 10_000

    def __init__(
        self,
        host: str,
        shell: Shell,
        options: SlurmOptions | None = None,
        via_executor: RemoteHost | None = None,
    ) -> None:
        self.host = host
        self.shell = shell
        self.options = options or SlurmOptions()
        self.command_counts: Counter[str] = Counter()  # every command issued, by name
        self.round_commands: list[int] = []  # Slurm commands of each poll round
        self._via = via_executor
        self._budget = Budget(
            self.COMMANDS_PER_S, self.MAX_CONCURRENT_COMMANDS, burst=self.COMMAND_BURST
        )
        self._watches: dict[_Key, _Watch] = {}
        self._finished: OrderedDict[_Key, ExitStatus] = OrderedDict()
        self._outputs: dict[_Key, tuple[str, ...]] = {}  # output globs of watched attempts
        self._accounting: bool | None = None  # None until sacct was tried
        self._health = HostHealth()
        self._on_state: StateListener | None = None
        self._on_health: HealthListener | None = None
        self._root: str | None = None
        self._pace = Pacer(
            self.options.poll_interval_min_s, self.options.poll_interval_s, growth=2.0
        )
        self._poller: asyncio.Task[None] | None = None
        # Lookups by tag arriving together share one squeue (and one sacct).
        self._lookups: Batcher[str, sp.JobRow | None] = Batcher(
            self._lookup_batch,
            name=f"slurm-lookup-{host}",
            max_batch=self.CHUNK * 20,
            max_inflight=1,
            window_s=self.LOOKUP_WINDOW_S,
        )
        self._in_round = 0

    @classmethod
    def create(cls, host: HostSpec, executors: Mapping[str, object]) -> SlurmExecutor:
        options = host.options if isinstance(host.options, SlurmOptions) else SlurmOptions()
        if options.via == "local":
            return cls(host.name, LocalShell(), options)
        via = executors.get(options.via)
        if not isinstance(via, RemoteHost):
            raise ExecutorError(f"slurm host '{host.name}': via '{options.via}' is not an ssh host")
        return cls(host.name, via.shell, options, via)

    # -- the Executor protocol ------------------------------------------------------------

    def health(self) -> HostHealth:
        if self._via is not None:
            via_health = self._via.health()
            if via_health.state != "ok":
                return via_health
        return self._health

    def listen(self, on_state: StateListener, on_health: HealthListener) -> None:
        self._on_state = on_state
        self._on_health = on_health

    async def start(self, launch: Launch) -> Handle:
        run_dir = await self._run_dir(launch)
        script, argv = render_batch(launch, self.options, run_dir)
        problems = check_outputs(launch.outputs)
        if problems:
            raise ExecutorError("; ".join(problems))
        files = await asyncio.to_thread(_run_dir_files, launch, run_dir)
        await self.shell.write_files({**files, f"{run_dir}/{BATCH_NAME}": script.encode()})
        job_id = await self._submit(argv, job_tag(*_key(launch)))
        handle = self._handle(launch, None, job_id)
        self._watch(handle, run_dir)
        self._outputs[_key(launch)] = launch.outputs
        log.info("slurm_submitted", job=launch.job, attempt=launch.attempt, job_id=job_id)
        return handle

    async def wait(self, handle: Handle) -> ExitStatus:
        key = _key(handle)
        if key in self._finished:  # settled before anyone waited: its outputs are still due
            status = self._finished[key]
        else:
            watch = self._watches.get(key)
            if watch is None:
                if handle.job_id is None:  # e.g. a handle rebuilt from the store: find the job
                    row = await self._lookup(job_tag(*key))
                    handle = replace(handle, job_id=row.job_id if row else None)
                watch = self._watch(handle, await self._run_dir(handle))
            # Shielded: a cancelled waiter must not cancel the watch other waiters share.
            status = await asyncio.shield(watch.done)
        outputs = self._outputs.pop(key, ())
        if status.ok and outputs and self.options.via != "local":
            problem = await self._fetch_outputs(
                await self._run_dir(handle), handle.run_dir, outputs
            )
            if problem is not None:
                return replace(status, reason=problem)
        return status

    async def signal(self, handle: Handle, signum: int) -> None:
        """Any signal cancels the job (``scancel``): Slurm sends SIGTERM, then SIGKILL after
        its KillWait; a queued job is simply removed."""
        watch = self._watches.get(_key(handle))
        job_id = handle.job_id or (watch.handle.job_id if watch else None)
        target = [job_id] if job_id else [f"--name={job_tag(*_key(handle))}"]
        result = await self._slurm([*self.SCANCEL, *target])
        log.info(
            "slurm_cancel",
            job=handle.job,
            job_id=job_id,
            signal=signum,
            returncode=result.returncode,
        )
        self._nudge()

    async def read_file(self, handle: Handle, name: str, limit: int) -> bytes:
        return await self.shell.read_file(f"{await self._run_dir(handle)}/{name}", 0, limit)

    async def read_log(self, handle: Handle, offset: int) -> bytes:
        run_dir = await self._run_dir(handle)
        return await self.shell.read_file(f"{run_dir}/{LOG_NAME}", offset)

    async def reattach(self, launch: Launch) -> Handle | None:
        run_dir = await self._run_dir(launch)
        row = await self._lookup(job_tag(launch.workflow_id, launch.job, launch.attempt))
        status_path = f"{run_dir}/{STATUS_NAME}"
        text = (await self.shell.read_file(status_path)).decode(errors="replace")
        if row is None and not text:
            if await self._claim(run_dir):
                log.info("slurm_never_submitted", job=launch.job, attempt=launch.attempt)
                return None
            text = (await self.shell.read_file(status_path)).decode(errors="replace")
        record = parse_status(text)
        if record.claimed and record.pid is None:
            return None
        handle = self._handle(launch, record.pid, row.job_id if row else None)
        self._watch(handle, run_dir).record = record
        self._outputs[_key(launch)] = launch.outputs
        log.info("slurm_reattached", job=launch.job, attempt=launch.attempt, job_id=handle.job_id)
        return handle

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._lookups.close()
        for watch in self._watches.values():
            watch.done.cancel()  # nobody will resolve these: waiters must not hang
        self._watches.clear()

    # -- commands -------------------------------------------------------------------------

    async def _slurm(self, argv: Sequence[str]) -> CommandResult:
        """Run one Slurm command within the cluster's budget; count it; track health."""
        async with self._budget.slot():
            self.command_counts[argv[0]] += 1
            if _POLLING.get():
                self._in_round += 1
            try:
                result = await self.shell.run(argv, timeout_s=self.COMMAND_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                self._set_health(HostHealth("unreachable", f"{argv[0]}: {exc}"))
                raise ExecutorError(f"{argv[0]} failed: {exc}") from exc
        err = _text(result.stderr)
        if result.returncode != 0 and self.UNREACHABLE_RE.search(err):
            self._set_health(HostHealth("unreachable", err.splitlines()[0]))
        else:
            self._set_health(HostHealth())
        return result

    async def _submit(self, argv: Sequence[str], tag: str) -> str:
        """sbatch; if its fate is unknown (transport lost, controller unreachable), find the
        job by its tag before trying again: one attempt never becomes two jobs."""
        delays = iter(self.SUBMIT_RETRY_S)
        while True:
            try:
                result = await self._slurm(argv)
                if result.returncode == 0 or not self.UNREACHABLE_RE.search(_text(result.stderr)):
                    break
                failure: Exception = ExecutorError(_text(result.stderr))
            except ExecutorError as exc:
                failure = exc
            row = await self._find_after(failure, tag, delays)
            if row is not None:
                return row.job_id
        if result.returncode != 0:
            raise ExecutorError(f"sbatch failed: {_text(result.stderr) or result.returncode}")
        return sp.parse_sbatch(result.stdout.decode())

    async def _find_after(
        self, failure: Exception, tag: str, delays: Iterator[float]
    ) -> sp.JobRow | None:
        """The job named ``tag`` once Slurm answers again (None: never submitted)."""
        log.warning("slurm_submit_unsure", host=self.host, tag=tag, error=str(failure))
        for delay_s in delays:
            await asyncio.sleep(delay_s)
            with contextlib.suppress(ExecutorError):
                return await self._lookup(tag)
        raise ExecutorError(f"sbatch for {tag}: {failure} (cluster unreachable)") from failure

    async def _fetch_outputs(
        self, remote_dir: str, local_dir: Path, patterns: Sequence[str]
    ) -> str | None:
        """Copy the files matching ``patterns`` back into the local run dir."""
        try:
            listing = await self._run_shell([*self.LIST_FILES, remote_dir, *patterns])
            names = list(filter(None, listing.stdout.decode(errors="replace").split("\0")))
            unmatched = [name[1:] for name in names if name.startswith("\1")]
            if unmatched:  # a declared output that is not there: the job did not do its work
                return f"outputs not fetched from {self.host}: no file matches '{unmatched[0]}'"
            for name in names:
                data, chunk = b"", b"x"
                while chunk:
                    chunk = await self.shell.read_file(f"{remote_dir}/{name}", len(data))
                    data += chunk
                await asyncio.to_thread(_write_local, local_dir / name, data)
        except (OSError, ExecutorError) as exc:
            return f"outputs not fetched from {self.host}: {exc}"
        return None

    async def _run_shell(self, argv: Sequence[str]) -> CommandResult:
        self.command_counts[argv[0]] += 1
        return await self.shell.run(argv, timeout_s=self.COMMAND_TIMEOUT_S)

    def _set_health(self, health: HostHealth) -> None:
        if health != self._health:
            self._health = health
            log.info("slurm_health", host=self.host, state=health.state, reason=health.reason)
            if self._on_health is not None:
                self._on_health()
            if health.state != "ok":
                with contextlib.suppress(RuntimeError):  # no loop: nothing to probe from
                    self._ensure_poller()

    async def _run_dir(self, attempt: Launch | Handle) -> str:
        if self._root is None and self.options.via != "local":
            root = self.options.root
            if root.startswith("~"):  # sbatch's --chdir does not expand ~
                home = _text((await self._run_shell(self.HOME)).stdout).strip()
                root = home + root[1:]
            self._root = root
        return cluster_run_dir(attempt, self.options, self._root)

    async def _claim(self, run_dir: str) -> bool:
        """Create the status file first, so a batch job that starts late refuses to run."""
        return (await self._run_shell([*self.CLAIM, run_dir])).returncode == 0

    async def squeue_rows(self, ids: Sequence[str]) -> dict[str, sp.JobRow]:
        """Slurm's view of these jobs: one squeue per CHUNK ids (finished ones stay for
        MinJobAge)."""
        rows: dict[str, sp.JobRow] = {}
        for chunk in sp.chunks(ids, self.CHUNK):
            result = await self._slurm([*self.SQUEUE, "-j", ",".join(chunk)])
            if result.returncode != 0 and not self.INVALID_ID_RE.search(_text(result.stderr)):
                raise ExecutorError(f"squeue failed: {_text(result.stderr)}")
            rows.update(sp.parse_squeue(result.stdout.decode(errors="replace")))
        return rows

    async def _sacct_rows(self, selector: Sequence[str]) -> dict[str, sp.JobRow] | None:
        """sacct's view (``selector``: ``-j IDS`` or ``--name=TAGS -S ...``); None if there
        is no accounting on this cluster (detected once) or sacct failed."""
        if self._accounting is False:
            return None
        result = await self._slurm([*self.SACCT, *selector])
        if result.returncode != 0:
            if self.NO_ACCOUNTING_RE.search(_text(result.stderr)):
                log.info("slurm_no_accounting", host=self.host)
                self._accounting = False
            else:
                log.warning("sacct_failed", host=self.host, error=_text(result.stderr))
            return None
        self._accounting = True
        return sp.parse_sacct(result.stdout.decode(errors="replace"))

    async def _read_records(self, watches: Sequence[_Watch]) -> bool:
        """Re-read the status files of ``watches`` (one command per CHUNK); True if any
        changed."""
        changed = False
        for chunk in sp.chunks(watches, self.CHUNK):
            paths = {f"{w.run_dir}/{STATUS_NAME}": w for w in chunk}
            result = await self._run_shell([*self.READ_STATUS, *paths])
            for path, text in sp.parse_status_dump(result.stdout).items():
                record = parse_status(text)
                if path in paths and record != paths[path].record:
                    paths[path].record = record
                    changed = True
        return changed

    # -- watching -------------------------------------------------------------------------

    def _handle(self, launch: Launch, pid: int | None, job_id: str | None) -> Handle:
        return Handle(
            launch.workflow_id, launch.job, launch.attempt, launch.run_dir, pid, self.host, job_id
        )

    def _watch(self, handle: Handle, run_dir: str) -> _Watch:
        key = _key(handle)
        watch = self._watches.get(key)
        if watch is None or (handle.job_id and not watch.handle.job_id):
            future = watch.done if watch else asyncio.get_running_loop().create_future()
            watch = _Watch(handle, run_dir, future)
            self._watches[key] = watch
        self._ensure_poller()
        self._nudge()
        return watch

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_loop(), name=f"slurm-poll-{self.host}")

    def _nudge(self) -> None:
        """Something changed (a submission, a cancel): poll soon again."""
        self._pace.hurry()

    async def _poll_loop(self) -> None:
        _POLLING.set(True)
        pace = self._pace
        pace.start_round()
        while self._watches or self._health.state != "ok":  # unhealthy: probe until back
            await pace.wait()
            pace.start_round()
            self._in_round = 0
            try:
                changed = await self._round()
            except Exception as exc:  # a failed round must not stop the watching
                log.warning("slurm_poll_failed", host=self.host, error=repr(exc))
                changed = False
            self.round_commands.append(self._in_round)
            pace.end_round(changed=changed)

    async def _round(self) -> bool:
        """One poll round over every watched attempt; True if anything changed."""
        watches = [w for w in self._watches.values() if not w.done.done()]
        if not watches:
            await self._slurm(self.PING)
            return False
        changed = await self._read_records(watches)
        ask = [w for w in watches if w.record.exit_code != 0 and w.handle.job_id]
        rows = await self.squeue_rows([w.handle.job_id for w in ask if w.handle.job_id])
        gone = [w.handle.job_id for w in ask if w.handle.job_id not in rows]
        if gone:
            rows.update(await self._sacct_rows(["-j", ",".join(i for i in gone if i)]) or {})
        to_settle: list[tuple[_Watch, sp.JobRow | None]] = []
        for watch in watches:
            row = rows.get(watch.handle.job_id or "")
            if watch.record.exit_code == 0 or row is None or row.finished:
                to_settle.append((watch, row))
            else:
                changed |= self._report(watch, row)
                if row.state == "PENDING" and row.reason in sp.NEVER_STARTS and not watch.never:
                    watch.never = row.reason  # it would wait forever, holding a slot
                    await self.signal(watch.handle, signal.SIGTERM)
        # A job Slurm calls finished may have written its exit record since we read it.
        await self._read_records([w for w, _ in to_settle if w.record.exit_code is None])
        for watch, row in to_settle:
            self._settle(watch, row)
        return changed or bool(to_settle)

    def _report(self, watch: _Watch, row: sp.JobRow) -> bool:
        """Tell the listener a queued job's state (pending and why, or running) on change."""
        shown = ("pending", row.reason) if row.state == "PENDING" else ("running", None)
        if shown == watch.shown:
            return False
        watch.shown = shown
        if self._on_state is not None:
            self._on_state(watch.handle, *shown)
        return True

    def _settle(self, watch: _Watch, row: sp.JobRow | None) -> None:
        status = sp.classify(row, watch.record)
        if watch.never is not None and watch.record.exit_code is None:
            status = ExitStatus(None, reason=f"Slurm can never start it ({watch.never})")
        key = _key(watch.handle)
        if self._watches.get(key) is watch:
            del self._watches[key]
        self._finished[key] = status
        while len(self._finished) > self.FINISHED_CACHE:
            self._finished.popitem(last=False)
        if not watch.done.done():
            watch.done.set_result(status)
        log.info(
            "slurm_finished",
            job=watch.handle.job,
            job_id=watch.handle.job_id,
            state=row and row.state,
            code=status.code,
            reason=status.reason,
        )

    # -- finding jobs by tag --------------------------------------------------------------

    async def _lookup(self, tag: str) -> sp.JobRow | None:
        """The newest job named ``tag``; lookups arriving together share one squeue (and one
        sacct for those squeue has forgotten)."""
        return await self._lookups.submit(tag)

    async def _lookup_batch(self, tags: list[str]) -> list[sp.JobRow | None]:
        try:
            found = await self._find_by_names(list(dict.fromkeys(tags)))
        except Exception as exc:
            raise ExecutorError(f"finding jobs failed: {exc!r}") from exc
        return [found.get(tag) for tag in tags]

    async def _find_by_names(self, tags: Sequence[str]) -> dict[str, sp.JobRow]:
        found: dict[str, sp.JobRow] = {}
        for chunk in sp.chunks(tags, self.CHUNK):
            result = await self._slurm([*self.SQUEUE, f"--name={','.join(chunk)}"])
            if result.returncode != 0:
                raise ExecutorError(f"squeue failed: {_text(result.stderr)}")
            sp.newest_by_name(sp.parse_squeue(result.stdout.decode(errors="replace")), found)
        missing = [t for t in tags if t not in found]
        for chunk in sp.chunks(missing, self.CHUNK):
            rows = await self._sacct_rows([f"--name={','.join(chunk)}", *self.SACCT_NAME_WINDOW])
            sp.newest_by_name(rows or {}, found)
        return found


def _run_dir_files(launch: Launch, run_dir: str) -> dict[str, bytes]:
    """Wrapper, script and inputs of an attempt, by path in its run dir on the cluster."""
    body = launch.inline.encode() if launch.inline is not None else launch.script.read_bytes()
    files = {f"{run_dir}/{WRAPPER_NAME}": wrapper_text(), f"{run_dir}/{launch.script.name}": body}
    files.update({f"{run_dir}/{path.name}": path.read_bytes() for path in launch.inputs})
    return files


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _key(attempt: Launch | Handle) -> _Key:
    return (attempt.workflow_id, attempt.job, attempt.attempt)


def _text(data: bytes) -> str:
    return data.decode(errors="replace").strip()
