"""Typed settings of remote hosts (ssh, slurm) and of a job's batch resources.

Pure: built and validated from plain mappings (a workflow's ``hosts:`` section or the
daemon's config), so the spec and the config can check them without importing asyncssh or
talking to a cluster. Each ``from_mapping`` returns the options or a list of problems, each
naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

# The classes of failure a retry policy can name (see `retry_on`).
FAILURE_CLASSES = ("exit", "signal", "timeout", "out_of_memory", "node_fail", "preempted", "lost")
# The keys of a `resources:` mapping (`mem` and `time` become `mem_kib` and `time_s`).
RESOURCE_FIELDS = (
    "cpus",
    "mem",
    "time",
    "gpus",
    "nodes",
    "ntasks",
    "partition",
    "account",
    "qos",
    "constraint",
    "sbatch_args",
)

_MEM_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?)?", re.IGNORECASE)
_MEM_UNITS = {"": 1, "K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}  # in KiB
_CLOCK_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")  # [D-]HH:MM:SS, MM:SS, MM
_UNITS_RE = re.compile(r"(?:(?:\d+\.?\d*|\.\d+)[smhd])+")  # 30m, 2h, 1h30m, 1.5d
_UNIT_PART = re.compile(r"(\d+\.?\d*|\.\d+)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# sbatch options that ccd sets itself, or that would break its tracking of the one job it
# submitted (an array, another cluster, a blocking or dry-run submit, a requeue that ccd's
# --no-requeue is there to prevent). sbatch takes any unambiguous prefix of a long option
# (`--job=x`) and bundled short ones (`-vJx`).
_RESERVED_LONG = (
    "--parsable",
    "--job-name",
    "--output",
    "--error",
    "--chdir",
    "--wrap",
    "--array",
    "--clusters",
    "--wait",
    "--test-only",
    "--requeue",
)
_RESERVED_SHORT = frozenset("JoeDaMW")
_FLAG_SHORT = frozenset("hHkOQsvV")  # sbatch's short options that take no value
_SAFE_ARG_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # fullmatch: no shell text, no newline
_ADDRESS_RE = re.compile(r"[A-Za-z0-9_.:%\[\]-]+")  # a host name or IP address
_USER_RE = re.compile(r"[^\s-][^\s]*")  # not an option, no blanks
_FIELD_PROBLEM = re.compile(r"field '([^']+)'(?:: | is )(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class SshOptions:
    hostname: str
    port: int = 22
    user: str | None = None  # None: ~/.ssh/config, else the local user
    identity: str | None = None  # private key file; None: agent / ~/.ssh defaults
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    insecure_skip_host_key_check: bool = False  # explicit opt-out, never the default
    root: str = "~/.ccd/runs"  # where run dirs live on the remote side
    keepalive_s: float = 30.0
    connect_timeout_s: float = 10.0
    max_sessions: int = 8  # channels at once; keep below sshd's MaxSessions (10)
    commands_per_s: float = 50.0  # the per-host command budget

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any]) -> SshOptions | list[str]:
        problems: list[str] = []
        values = _pick(cls, data, problems, required=("hostname",), default_hostname=name)
        if problems:
            return problems
        opts = cls(**values)
        problems += _check_port(opts.port)
        problems += _positive(opts, ("keepalive_s", "connect_timeout_s", "commands_per_s"))
        if opts.max_sessions < 1:
            problems.append("field 'max_sessions': expected an integer >= 1")
        if not _ADDRESS_RE.fullmatch(opts.hostname) or opts.hostname.startswith("-"):
            problems.append(f"field 'hostname': '{opts.hostname}' is not a host name or address")
        if opts.user is not None and not _USER_RE.fullmatch(opts.user):
            problems.append(f"field 'user': '{opts.user}' is not a user name")
        return problems or opts


@dataclass(frozen=True, slots=True)
class Resources:
    """What a batch job asks the scheduler for. ``mem_kib``/``time_s`` are normalised."""

    cpus: int | None = None
    mem_kib: int | None = None
    time_s: int | None = None
    gpus: int | None = None
    nodes: int | None = None
    ntasks: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch_args: tuple[str, ...] = ()

    def merged_over(self, defaults: Resources) -> Resources:
        """These resources, with unset fields taken from ``defaults``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in values.items():
            if value is None or value == ():
                values[key] = getattr(defaults, key)
        return Resources(**values)

    def scaled(self, factors: Mapping[str, float]) -> Resources:
        """Escalated for a retry: ``{"mem": 2, "time": 1.5}`` multiplies those requests."""
        mem = self.mem_kib
        time_s = self.time_s
        if mem is not None and "mem" in factors:
            mem = math.ceil(mem * factors["mem"])
        if time_s is not None and "time" in factors:
            time_s = math.ceil(time_s * factors["time"])
        return replace(self, mem_kib=mem, time_s=time_s)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Resources | list[str]:
        problems: list[str] = []
        problems += [f"unknown field '{k}'" for k in data if k not in RESOURCE_FIELDS]
        counts: dict[str, Any] = {
            k: _count(data.get(k), k, problems) for k in ("cpus", "gpus", "nodes", "ntasks")
        }
        names: dict[str, Any] = {
            k: _word(data.get(k), k, problems)
            for k in ("partition", "account", "qos", "constraint")
        }
        mem = parse_mem_kib(data["mem"], problems) if data.get("mem") is not None else None
        time_s = parse_walltime_s(data["time"], problems) if data.get("time") is not None else None
        args = _sbatch_args(data.get("sbatch_args"), problems)
        if problems:
            return problems
        return cls(mem_kib=mem, time_s=time_s, sbatch_args=args, **counts, **names)


@dataclass(frozen=True, slots=True)
class SlurmOptions:
    via: str = "local"  # "local", or the name of an ssh host whose connection runs Slurm
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    poll_interval_s: float = 30.0  # grows while nothing changes, resets on a change
    poll_interval_min_s: float = 2.0
    root: str = "~/.ccd/runs"  # run dirs, on a file system the compute nodes share
    resources: Resources = field(default_factory=Resources)
    arrays: bool = True  # ready jobs alike go out as one job array (max_jobs: each one's %N)
    max_queued: int = 1000  # with arrays: how many of its jobs are in Slurm at once

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SlurmOptions | list[str]:
        problems: list[str] = []
        raw = dict(data)
        resources_data = raw.pop("resources", None)
        resources_data = {} if resources_data is None else resources_data
        values = _pick(cls, raw, problems, skip=("resources",))
        if not isinstance(resources_data, Mapping):
            return [*problems, "field 'resources': expected a mapping"]
        resources = Resources.from_mapping(resources_data)
        if isinstance(resources, list):
            problems += [f"resources: {p}" for p in resources]
        if problems:
            return problems
        assert isinstance(resources, Resources)
        opts = cls(resources=resources, **values)
        problems += _positive(opts, ("poll_interval_s", "poll_interval_min_s", "max_queued"))
        if not problems and opts.poll_interval_min_s > opts.poll_interval_s:
            problems.append("field 'poll_interval_min_s': must not exceed poll_interval_s")
        for name in ("via", "partition", "account", "qos"):
            _word(getattr(opts, name), name, problems)
        return problems or opts


def split_problem(problem: str) -> tuple[str | None, str]:
    """One of ``from_mapping``'s problems -> (the dotted field it is about, what is wrong):
    ``"resources: field 'mem': '4X' is not..."`` -> ``("resources.mem", "'4X' is not...")``.
    A problem about no single value (``"unknown field 'x'"``) keeps its text, with the field
    of the mapping it was found in (None at the top)."""
    path: list[str] = []
    while (head := problem.split(": ", 1))[0].isidentifier() and len(head) == 2:
        path.append(head[0])
        problem = head[1]
    match = _FIELD_PROBLEM.fullmatch(problem)
    if match:
        return ".".join([*path, match.group(1)]), match.group(2)
    return ".".join(path) or None, problem


def parse_mem_kib(value: Any, problems: list[str]) -> int | None:
    """``4G``, ``512M``, ``1.5G``, ``2048`` (MiB, as sbatch reads a bare number) -> KiB."""
    text = str(value).strip()
    match = _MEM_RE.fullmatch(text)
    if isinstance(value, bool) or match is None:
        problems.append(f"field 'mem': '{value}' is not a size like 4G or 512M")
        return None
    number, unit = float(match.group(1)), (match.group(2) or "").upper()
    kib = number * (_MEM_UNITS[unit] if unit else 1024)
    if kib < 1:
        problems.append(f"field 'mem': '{value}' is too small")
        return None
    return math.ceil(kib)


def parse_walltime_s(value: Any, problems: list[str]) -> int | None:
    """Slurm's forms (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) or units (``30m``,
    ``2h``, ``1h30m``, ``1.5d``); a bare number is minutes, as sbatch reads it."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value * 60  # a bare number is minutes, as in sbatch --time
    text = str(value).strip()
    seconds = units_s(text)
    if seconds is not None and seconds >= 1:
        return math.ceil(seconds)
    clock = clock_s(text)
    if clock is not None and clock > 0:
        return clock
    problems.append(f"field 'time': '{value}' is not a walltime like 30m, 2h or 1-12:00:00")
    return None


def units_s(text: str) -> float | None:
    """Seconds from a duration in units: ``30s``, ``10m``, ``1h30m``, ``1.5d``; None if the
    text is not of that form. (The one parser of durations: a job's ``timeout``, a batch
    job's walltime and Slurm's own limits all come through here or `clock_s`.)"""
    if not _UNITS_RE.fullmatch(text):
        return None
    return sum(float(n) * _UNIT_S[unit] for n, unit in _UNIT_PART.findall(text))


def clock_s(text: str) -> int | None:
    """Seconds from Slurm's forms: ``D-HH[:MM[:SS]]``, ``HH:MM:SS``, ``MM:SS`` or ``MM``;
    None if the text is not of that form (e.g. ``UNLIMITED``)."""
    match = _CLOCK_RE.fullmatch(text)
    if match is None:
        return None
    days, a, b, c = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        return days * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:  # HH:MM:SS
        return (a or 0) * 3600 + (b or 0) * 60 + c
    if b is not None:  # MM:SS
        return (a or 0) * 60 + b
    return (a or 0) * 60  # MM


def format_walltime(seconds: int) -> str:
    """Seconds -> Slurm's ``D-HH:MM:SS`` (rounded up to whole minutes, sbatch's unit)."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rem = divmod(minutes, 24 * 60)
    hours, mins = divmod(rem, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"


def _sbatch_args(value: Any, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        problems.append("field 'sbatch_args': expected a list of strings")
        return ()
    for arg in value:
        if not _SAFE_ARG_RE.fullmatch(arg):
            problems.append(
                f"field 'sbatch_args': '{arg}' has characters outside [A-Za-z0-9_@%+=:,./-]"
            )
        elif not arg.startswith("-") or arg == "-":
            problems.append(
                f"field 'sbatch_args': '{arg}' is not an option; give values "
                "joined to their option: --partition=gpu, -pgpu"
            )
        elif _reserved(arg):
            problems.append(f"field 'sbatch_args': '{arg}' is set by ccd itself")
    return tuple(value)


def _reserved(arg: str) -> bool:
    if arg.startswith("--"):
        name = arg.split("=", 1)[0]
        return name == "--" or any(option.startswith(name) for option in _RESERVED_LONG)
    for letter in arg[1:]:
        if letter in _RESERVED_SHORT:
            return True
        if letter not in _FLAG_SHORT:
            return False  # the rest is this option's value
    return False


def _count(value: Any, name: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"field '{name}': expected an integer >= 1")
        return None
    return value


def _word(value: Any, name: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    value = _text(value)
    if not isinstance(value, str) or not _SAFE_ARG_RE.fullmatch(value):
        problems.append(f"field '{name}': expected a name of [A-Za-z0-9_@%+=:,./-]")
        return None
    return value


def _text(value: Any) -> Any:
    """An integer as the text YAML read it from; anything else unchanged."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_port(port: int) -> list[str]:
    return [] if 0 < port < 65536 else ["field 'port': expected 1-65535"]


def _positive(opts: Any, names: tuple[str, ...]) -> list[str]:
    return [f"field '{n}': expected a number > 0" for n in names if not getattr(opts, n) > 0]


def _pick(
    cls: type,
    data: Mapping[str, Any],
    problems: list[str],
    *,
    required: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    default_hostname: str | None = None,
) -> dict[str, Any]:
    """The dataclass fields present in ``data``, type-checked against their defaults."""
    known = {f.name: f for f in fields(cls) if f.name not in skip}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("type", "max_jobs") or value is None:
            continue  # HostSpec's own fields; null means the default
        if key not in known:
            problems.append(f"unknown field '{key}'")
            continue
        values[key] = _typed(key, value, known[key].default, problems)
    for key in required:
        if key not in values:
            if key == "hostname" and default_hostname is not None:
                values[key] = default_hostname  # a host named like its ~/.ssh/config entry
            else:
                problems.append(f"field '{key}' is required")
    return values


def _typed(key: str, value: Any, default: Any, problems: list[str]) -> Any:
    if isinstance(default, bool):
        ok, wanted = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        wanted, value = "a number", float(value) if ok else value
    else:  # str or None default: a string (a number too: `account: 12345`, `user: 1000`)
        value = _text(value)
        ok, wanted = isinstance(value, str) and value.strip() != "", "a non-empty string"
    if not ok:
        problems.append(f"field '{key}': expected {wanted}, got {value!r}")
    return value
