"""Run attempts as Slurm batch jobs, locally (``via: local``) or through an ssh host's shell.

Each attempt gets a generated batch script (``job.sbatch``: ``#SBATCH`` lines from its
resources, then ``exec sh wrapper.sh ARGV...``) in its run directory, submitted with
``sbatch --parsable``. The same wrapper and status file as on other hosts record start and
exit; Slurm's own word is needed only for jobs without an exit record (still queued, running,
or killed from outside: walltime, memory, node failure, preemption, scancel).

Attempts handed over in the same moment go out together (`slurm_submit`): those of one
workflow with the same batch options as one job array (`slurm_arrays`), each element still
its own run dir, status file, log and attempt; refusals that mean "not now" (a submit limit)
hold attempts for a later try instead of failing them. Jobs are named by a tag,
``ccd:<workflow>:<job>:<attempt>`` or an array's ``ccd:<workflow>:@<token>`` (":" and "@"
are outside the name rule, so tags never collide), which is how a restarted daemon finds a
job whose id it never recorded: no attempt is ever submitted twice. Run directories: with
``via: local`` the attempt's own run dir (under the daemon's state dir, which the compute
nodes must see, as a home directory usually is); through ssh,
``<root>/<workflow>/<job>/<attempt>`` on the cluster.

One poller per cluster: each round reads the watched jobs' status files (one command), asks
``squeue`` once about every job (or array element) without a clean exit record, and
``sacct`` once about those that ended, for their final state and what they used (sacct's
figures of a job come a moment after its end: an ended attempt is asked about again in
later rounds until they are there, and told to the scheduler then). The interval doubles
from ``poll_interval_min_s`` up to ``poll_interval_s`` while nothing changes and resets on
any change or submission; every Slurm command of the executor goes through one budget
(`slurm_commands`). Cancels of one moment share one scancel (`slurm_cancel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

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
    UsageListener,
    check_outputs,
    parse_status,
    wrapper_text,
)
from ccd.executors.batching import Pacer
from ccd.executors.shell import LocalShell, Shell
from ccd.executors.slurm_arrays import (
    group_key,
)
from ccd.executors.slurm_cancel import CancelBatcher
from ccd.executors.slurm_commands import POLLING, SlurmCommands
from ccd.executors.slurm_parse import BATCH_NAME, cluster_run_dir, job_tag, render_batch
from ccd.executors.slurm_submit import Cluster, Entry, SubmitQueue
from ccd.models import ExitStatus
from ccd.spec.hosts import Resources, SlurmOptions
from ccd.spec.model import HostSpec

# render_batch and friends live with the other pure Slurm text in ccd.executors.slurm_parse.
__all__ = ["SlurmExecutor", "check_limits", "cluster_run_dir", "job_tag", "render_batch"]

log = structlog.get_logger("ccd.slurm")

_Key = tuple[str, str, int]


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
    entry: Entry | None = None  # in the submit queue, not taken yet (held)
    cancel_asked: bool = False  # cancelled while its sbatch was under way

    @property
    def submitting(self) -> bool:
        return self.entry is not None and self.handle.job_id is None


class SlurmExecutor(SlurmCommands):
    """The ``slurm`` backend: one cluster, reached through a `Shell`."""

    USAGE_ROUNDS = 10  # rounds to wait for sacct's figures of an attempt that has ended
    FINISHED_CACHE = 10_000

    def __init__(
        self,
        host: str,
        shell: Shell,
        options: SlurmOptions | None = None,
        via_executor: RemoteHost | None = None,
        *,
        throttle: int | None = None,
    ) -> None:
        super().__init__(host, shell, options)
        self._via = via_executor
        self._watches: dict[_Key, _Watch] = {}
        self._finished: OrderedDict[_Key, ExitStatus] = OrderedDict()
        self._outputs: dict[_Key, tuple[str, ...]] = {}  # output globs of watched attempts
        self._on_state: StateListener | None = None
        self._pace = Pacer(
            self.options.poll_interval_min_s, self.options.poll_interval_s, growth=2.0
        )
        self._poller: asyncio.Task[None] | None = None
        self._on_usage: UsageListener | None = None
        self._usage_wanted: dict[str, tuple[Handle, int]] = {}  # job id -> (attempt, rounds)
        cluster = Cluster(
            self._slurm,
            self._lookup,
            self.shell.write_files,
            self._max_array_size,
            self._accepted,
            self._refused,
            self._holding,
        )
        self.submit_queue = SubmitQueue(cluster, throttle if self.options.arrays else None)
        self._cancels = CancelBatcher(self._scancel, self._live_elements)

    @classmethod
    def create(cls, host: HostSpec, executors: Mapping[str, object]) -> SlurmExecutor:
        options = host.options if isinstance(host.options, SlurmOptions) else SlurmOptions()
        if options.via == "local":
            return cls(host.name, LocalShell(), options, throttle=host.max_jobs)
        via = executors.get(options.via)
        if not isinstance(via, RemoteHost):
            raise ExecutorError(f"slurm host '{host.name}': via '{options.via}' is not an ssh host")
        return cls(host.name, via.shell, options, via, throttle=host.max_jobs)

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

    def listen_usage(self, on_usage: UsageListener) -> None:
        self._on_usage = on_usage

    async def usage_settled(self, timeout_s: float) -> None:
        """Poll at the fastest pace until sacct has told what every ended attempt used (a
        run about to exit wants its last jobs' figures too), for at most ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._usage_wanted and loop.time() < deadline:
            self._nudge()
            await asyncio.sleep(self.options.poll_interval_min_s)

    async def start(self, launch: Launch) -> Handle:
        """Queue the attempt for submission (with the others of this moment: see
        `slurm_submit`) and return once Slurm has taken it, or once it is held for a later
        try (its handle has no job id yet; waiting for it waits for that too)."""
        run_dir = await self._run_dir(launch)
        script, _ = render_batch(launch, self.options, run_dir)
        problems = check_outputs(launch.outputs)
        if problems:
            raise ExecutorError("; ".join(problems))
        # Small local reads, blocking on purpose: all of one moment's attempts then join the
        # queue in the same turn, and go out in one sbatch.
        files = _run_dir_files(launch, run_dir)
        files[f"{run_dir}/{BATCH_NAME}"] = script.encode()
        entry = Entry(launch, run_dir, group_key(launch, self.options), files)
        self.submit_queue.add(entry)
        job_id = await entry.outcome  # ExecutorError: refused for good
        handle = self._handle(launch, None, job_id)
        watch = self._watch(handle, run_dir)
        self._outputs[_key(launch)] = launch.outputs
        if job_id is None:
            watch.entry = entry
            self._tell_held(watch)
        return handle

    async def wait(self, handle: Handle) -> ExitStatus:
        key = _key(handle)
        status = self._finished.get(key)  # settled before anyone waited: outputs still due
        if status is None:
            watch = self._watches.get(key)
            if watch is None:
                run_dir = await self._run_dir(handle)
                if handle.job_id is None:  # e.g. a handle rebuilt from the store: find it
                    handle = replace(handle, job_id=await self._find_job_id(handle, run_dir))
                watch = self._watch(handle, run_dir)
            # Shielded: a cancelled waiter must not cancel the watch other waiters share.
            status = await asyncio.shield(watch.done)
        outputs = self._outputs.pop(key, ())  # (also when it ended before this wait began)
        if status.ok and outputs and self.options.via != "local":
            remote_dir = await self._run_dir(handle)
            problem = await self._fetch_outputs(remote_dir, handle.run_dir, outputs)
            if problem is not None:
                return replace(status, reason=problem)
        return status

    async def signal(self, handle: Handle, signum: int) -> None:
        """Any signal cancels the job (``scancel``): Slurm sends SIGTERM, then SIGKILL after
        its KillWait; a queued job is simply removed, an array element alone
        (``scancel 81_3``). Cancels of one moment share one scancel; an array all of whose
        elements are cancelled goes by its own id. A job not submitted yet never will be."""
        watch = self._watches.get(_key(handle))
        if watch is not None and watch.submitting:
            assert watch.entry is not None
            if self.submit_queue.cancel(watch.entry):
                self._settle_status(watch, ExitStatus(None, reason="cancelled"))
            else:  # in an sbatch right now: cancelled as soon as its id is known
                watch.cancel_asked = True
            return
        job_id = handle.job_id or (watch.handle.job_id if watch else None)
        if job_id is not None:
            await self._cancels.cancel(job_id)
        else:
            await self._scancel([f"--name={job_tag(*_key(handle))}"])
        log.info("slurm_cancel", job=handle.job, job_id=job_id, signal=signum)

    async def read_file(self, handle: Handle, name: str, limit: int) -> bytes:
        return await self.shell.read_file(f"{await self._run_dir(handle)}/{name}", 0, limit)

    async def read_log(self, handle: Handle, offset: int) -> bytes:
        run_dir = await self._run_dir(handle)
        return await self.shell.read_file(f"{run_dir}/{LOG_NAME}", offset)

    async def reattach(self, launch: Launch) -> Handle | None:
        run_dir = await self._run_dir(launch)
        job_id = await self._find_job_id(launch, run_dir)
        status_path = f"{run_dir}/{STATUS_NAME}"
        text = (await self.shell.read_file(status_path)).decode(errors="replace")
        if job_id is None and not text:
            if await self._claim(run_dir):
                log.info("slurm_never_submitted", job=launch.job, attempt=launch.attempt)
                return None
            text = (await self.shell.read_file(status_path)).decode(errors="replace")
        record = parse_status(text)
        if record.claimed and record.pid is None:
            return None
        handle = self._handle(launch, record.pid, job_id)
        self._watch(handle, run_dir).record = record
        self._outputs[_key(launch)] = launch.outputs
        log.info("slurm_reattached", job=launch.job, attempt=launch.attempt, job_id=handle.job_id)
        return handle

    async def close(self) -> None:
        await self.submit_queue.close()
        await self._cancels.close()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._lookups.close()
        for watch in self._watches.values():
            watch.done.cancel()  # nobody will resolve these: waiters must not hang
        self._watches.clear()

    # -- submission (see slurm_submit) and finding attempts again -------------------------

    def _accepted(self, entry: Entry, job_id: str) -> None:
        """A held attempt was taken at last."""
        watch = self._watches.get(_key(entry.launch))
        if watch is None:
            return
        watch.handle = replace(watch.handle, job_id=job_id)
        watch.entry = None
        watch.shown = ("pending", f"submitted as {job_id} after a hold")
        if self._on_state is not None:
            self._on_state(watch.handle, *watch.shown)
        if watch.cancel_asked:
            task = asyncio.create_task(self.signal(watch.handle, signal.SIGTERM))
            task.add_done_callback(_log_failure)
        self._nudge()

    def _refused(self, entry: Entry, message: str) -> None:
        """A held attempt was refused for good: it could not start."""
        watch = self._watches.get(_key(entry.launch))
        if watch is not None:
            self._settle_status(watch, ExitStatus(None, reason=f"could not start: {message}"))

    def _holding(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            watch = self._watches.get(_key(entry.launch))
            if watch is not None:
                self._tell_held(watch)

    def _tell_held(self, watch: _Watch) -> None:
        """Say why a held attempt waits (its reason, in the job's status)."""
        why = watch.entry.held if watch.entry is not None else None
        if why is not None and watch.shown != ("pending", why):
            watch.shown = ("pending", why)
            if self._on_state is not None:
                self._on_state(watch.handle, "pending", why)

    def _live_elements(self, array_id: str) -> list[str]:
        """The watched, unfinished elements of an array."""
        prefix = f"{array_id}_"
        return [
            job_id
            for w in self._watches.values()
            if (job_id := w.handle.job_id) and job_id.startswith(prefix) and not w.done.done()
        ]

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

    def _on_unhealthy(self) -> None:
        self._ensure_poller()

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_loop(), name=f"slurm-poll-{self.host}")

    def _nudge(self) -> None:
        """Something changed (a submission, a cancel): poll soon again."""
        self._pace.hurry()

    async def _poll_loop(self) -> None:
        POLLING.set(True)
        pace = self._pace
        pace.start_round()
        # Unhealthy: probe until back. Ended attempts whose accounting is still to come count.
        while self._watches or self._usage_wanted or self._health.state != "ok":
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
        """One poll round over every watched attempt; True if anything changed. One squeue
        for those without a clean exit record, one sacct for those that left squeue, ended
        there, or ended before and still owe their accounting."""
        watches = [w for w in self._watches.values() if not w.done.done() and not w.submitting]
        if not watches and not self._usage_wanted:
            await self._slurm(self.PING)
            return False
        changed = await self._read_records(watches)
        ask = [w for w in watches if w.record.exit_code != 0 and w.handle.job_id]
        rows = await self.squeue_rows([w.handle.job_id for w in ask if w.handle.job_id])
        ended = [i for w in ask if (i := w.handle.job_id) and (i not in rows or rows[i].finished)]
        accounted = await self._accounted([*ended, *self._usage_wanted])
        for job_id in ended:
            if (row := _with_accounting(rows.get(job_id), accounted.get(job_id))) is not None:
                rows[job_id] = row
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
        self._deliver_usage(accounted)
        for watch, row in to_settle:
            self._settle(watch, row)
        return changed or bool(to_settle)

    def _deliver_usage(self, accounted: Mapping[str, sp.JobRow]) -> None:
        """Tell what ended attempts used, once sacct has it (or give up after a while)."""
        for job_id, (handle, rounds) in list(self._usage_wanted.items()):
            row = accounted.get(job_id)
            if row is not None and row.finished and row.usage is not None:
                del self._usage_wanted[job_id]
                if self._on_usage is not None:
                    self._on_usage(handle, row.usage, row.request)
            elif rounds <= 1 or self._accounting is False:
                del self._usage_wanted[job_id]
            else:
                self._usage_wanted[job_id] = (handle, rounds - 1)

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
        job_id = watch.handle.job_id
        if job_id and (row is None or row.usage is None) and self._accounting is not False:
            self._usage_wanted[job_id] = (watch.handle, self.USAGE_ROUNDS)  # sacct: later
        self._settle_status(watch, status)
        log.info(
            "slurm_finished",
            job=watch.handle.job,
            job_id=job_id,
            state=row and row.state,
            code=status.code,
            reason=status.reason,
        )

    def _settle_status(self, watch: _Watch, status: ExitStatus) -> None:
        key = _key(watch.handle)
        if self._watches.get(key) is watch:
            del self._watches[key]
        self._finished[key] = status
        while len(self._finished) > self.FINISHED_CACHE:
            self._finished.popitem(last=False)
        if not watch.done.done():
            watch.done.set_result(status)


def _run_dir_files(launch: Launch, run_dir: str) -> dict[str, bytes]:
    """Wrapper, script and inputs of an attempt, by path in its run dir on the cluster."""
    body = launch.inline.encode() if launch.inline is not None else launch.script.read_bytes()
    files = {f"{run_dir}/{WRAPPER_NAME}": wrapper_text(), f"{run_dir}/{launch.script.name}": body}
    files.update({f"{run_dir}/{path.name}": path.read_bytes() for path in launch.inputs})
    return files


def _with_accounting(row: sp.JobRow | None, accounted: sp.JobRow | None) -> sp.JobRow | None:
    """squeue's word on an ended job (sacct's if squeue has forgotten it), with sacct's
    figures once sacct has it ended too (it may lag behind squeue by a moment)."""
    if row is None or accounted is None:
        return row or accounted
    if not accounted.finished:
        return row
    return replace(row, usage=accounted.usage, request=accounted.request)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("slurm_cancel_failed", error=repr(error))


def _key(attempt: Launch | Handle) -> _Key:
    return (attempt.workflow_id, attempt.job, attempt.attempt)


def _text(data: bytes) -> str:
    return data.decode(errors="replace").strip()
