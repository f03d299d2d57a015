"""The commands of one Slurm cluster, for its executor (`ccd.executors.slurm`): every one run
within one budget (concurrency and rate), counted, and watched for a controller that stops
answering; the readers of squeue and sacct; jobs found again by their tags (a restarted
daemon's only way to the ones whose ids it never recorded); run dirs on the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path

import structlog

from ccd.errors import ExecutorError
from ccd.executors import slurm_parse as sp
from ccd.executors.base import Handle, HealthListener, HostHealth, Launch
from ccd.executors.batching import Batcher, Budget
from ccd.executors.shell import CommandResult, Shell
from ccd.executors.slurm_arrays import (
    MARKER_NAME,
    array_job_id,
    element_id,
    parse_marker,
    parse_max_array_size,
)
from ccd.executors.slurm_parse import cluster_run_dir, job_tag
from ccd.spec.hosts import SlurmOptions

log = structlog.get_logger("ccd.slurm")

# Set inside the poller's task: its Slurm commands are counted per round.
POLLING: ContextVar[bool] = ContextVar("ccd_slurm_polling", default=False)


class SlurmCommands:
    """One cluster's commands; the base of its executor."""

    SBATCH = sp.SBATCH
    SQUEUE = ("squeue", "-h", "-r", "-t", "all", "-O", sp.SQUEUE_FIELDS)
    SACCT = ("sacct", "-n", "-P", "-o", sp.SACCT_FIELDS)
    CONFIG = ("scontrol", "show", "config")
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

    def __init__(self, host: str, shell: Shell, options: SlurmOptions | None = None) -> None:
        self.host = host
        self.shell = shell
        self.options = options or SlurmOptions()
        self.command_counts: Counter[str] = Counter()  # every command issued, by name
        self.round_commands: list[int] = []  # Slurm commands of each poll round
        self._budget = Budget(
            self.COMMANDS_PER_S, self.MAX_CONCURRENT_COMMANDS, burst=self.COMMAND_BURST
        )
        self._accounting: bool | None = None  # None until sacct was tried
        self._health = HostHealth()
        self._on_health: HealthListener | None = None
        self._root: str | None = None
        # Lookups by tag arriving together share one squeue (and one sacct).
        self._lookups: Batcher[str, sp.JobRow | None] = Batcher(
            self._lookup_batch,
            name=f"slurm-lookup-{host}",
            max_batch=self.CHUNK * 20,
            max_inflight=1,
            window_s=self.LOOKUP_WINDOW_S,
        )
        self._in_round = 0
        self._max_array: int | None = None

    def _on_unhealthy(self) -> None:
        """The cluster stopped answering: the executor probes it until it is back."""

    def _nudge(self) -> None:
        """Something changed (a cancel, a submission): the executor polls soon again."""

    async def _slurm(self, argv: Sequence[str]) -> CommandResult:
        """Run one Slurm command within the cluster's budget; count it; track health."""
        async with self._budget.slot():
            self.command_counts[argv[0]] += 1
            if POLLING.get():
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
                    self._on_unhealthy()

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

    async def _accounted(self, ids: Sequence[str]) -> dict[str, sp.JobRow]:
        """sacct's rows of these jobs (empty without accounting): one sacct per CHUNK ids."""
        rows: dict[str, sp.JobRow] = {}
        for chunk in sp.chunks(list(dict.fromkeys(ids)), self.CHUNK):
            rows.update(await self._sacct_rows(["-j", ",".join(chunk)]) or {})
        return rows

    async def _max_array_size(self) -> int:
        """Elements per array: the cluster's MaxArraySize (read once); 1 with ``arrays:
        false``, on a cluster without arrays, or while its config cannot be read."""
        if not self.options.arrays:
            return 1
        if self._max_array is None:
            try:
                result = await self._slurm(self.CONFIG)
            except ExecutorError:
                return 1
            size = parse_max_array_size(result.stdout.decode(errors="replace"))
            if result.returncode != 0 or size is None:
                return 1
            self._max_array = max(1, size)
        return self._max_array

    async def _find_job_id(self, attempt: Launch | Handle, run_dir: str) -> str | None:
        """The Slurm id of an attempt started by an earlier daemon, by its tag: its array's
        (named in the marker in its run dir) or its own. None if Slurm knows of none."""
        marker = await self.shell.read_file(f"{run_dir}/{MARKER_NAME}")
        array = parse_marker(marker.decode(errors="replace"))
        tag = array[0] if array else job_tag(attempt.workflow_id, attempt.job, attempt.attempt)
        row = await self._lookup(tag)
        if row is None:
            return None
        return element_id(array_job_id(row.job_id), array[1]) if array else row.job_id

    async def _scancel(self, targets: Sequence[str]) -> None:
        result = await self._slurm([*self.SCANCEL, *targets])
        log.info("slurm_scancel", host=self.host, targets=len(targets), rc=result.returncode)
        self._nudge()

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


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _text(data: bytes) -> str:
    return data.decode(errors="replace").strip()
