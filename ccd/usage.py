"""What an attempt used (wall time, CPU time, peak memory) against what it asked for, and how
that reads as efficiency, the way Slurm's ``seff`` puts it. Pure data and arithmetic: the
backends measure (local: the kernel's accounting of the job's process tree, read by the
shepherd that reaps it; ssh: the wrapper's ``times``; Slurm: ``sacct``), the scheduler
records, the CLI shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

# A request counts as "far more than used" when less than this share of it was used...
FAR_MORE_SHARE = 0.25
# ...and it is big enough to matter: a 1-CPU, 100 MB, 2-minute job wastes nothing worth a word.
_MIN_CPUS = 2
_MIN_MEM_BYTES = 1 << 30
_MIN_TIME_S = 600.0

_TIMES_RE = re.compile(r"(\d+)m(\d+(?:\.\d*)?)s")  # sh's `times`: 1m2.345s
_MEM_RE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)", re.IGNORECASE)
_MEM_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


@dataclass(frozen=True, slots=True)
class Usage:
    """What an attempt used; None where its backend cannot tell."""

    wall_s: float | None = None
    cpu_s: float | None = None  # user + system, of the job's whole process tree
    max_rss_bytes: int | None = None  # the peak resident memory the backend saw

    def merged_over(self, other: Usage | None) -> Usage:
        """These figures, with the unknown ones taken from ``other``."""
        if other is None:
            return self
        return Usage(*_merged(self, other))

    def to_json(self) -> dict[str, Any]:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "max_rss_bytes": self.max_rss_bytes}


@dataclass(frozen=True, slots=True)
class Request:
    """What an attempt asked for (a batch system's allocation, or a job's ``resources:`` and
    ``timeout:`` elsewhere); None where nothing was asked."""

    cpus: int | None = None
    mem_bytes: int | None = None
    time_s: float | None = None

    def merged_over(self, other: Request | None) -> Request:
        if other is None:
            return self
        return Request(*_merged(self, other))

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def to_json(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "mem_bytes": self.mem_bytes, "time_s": self.time_s}


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Shares (1.0 = 100%), as seff reports them; None where a figure is missing."""

    cpu: float | None = None  # CPU time over wall time x CPUs (1 CPU where none was asked)
    mem: float | None = None  # peak memory over the memory asked for
    time: float | None = None  # wall time over the time limit

    def to_json(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "mem": self.mem, "time": self.time}


def efficiency(usage: Usage | None, request: Request | None) -> Efficiency:
    usage = usage or Usage()
    request = request or Request()
    cpus = request.cpus or 1
    return Efficiency(
        cpu=_share(usage.cpu_s, usage.wall_s * cpus if usage.wall_s is not None else None),
        mem=_share(usage.max_rss_bytes, request.mem_bytes),
        time=_share(usage.wall_s, request.time_s),
    )


def oversized(usage: Usage | None, request: Request | None) -> list[str]:
    """What a finished attempt asked for far more of than it used, one phrase each
    ("mem 8.0G, peak 300M (4%)"); empty if nothing, or if it is unknown. A time limit alone
    (a local or ssh job's ``timeout:``) is a safety net, not a reservation: only a request
    that also names CPUs or memory (a batch job's) is taken to task for its time."""
    if usage is None or request is None:
        return []
    eff = efficiency(usage, request)
    found: list[str] = []
    if request.cpus is not None and request.cpus >= _MIN_CPUS and _low(eff.cpu):
        used = (usage.cpu_s or 0.0) / (usage.wall_s or 1.0)
        found.append(f"cpus {request.cpus}, used {used:.1f} ({_pct(eff.cpu)})")
    if request.mem_bytes is not None and request.mem_bytes >= _MIN_MEM_BYTES and _low(eff.mem):
        peak = format_bytes(usage.max_rss_bytes)
        found.append(f"mem {format_bytes(request.mem_bytes)}, peak {peak} ({_pct(eff.mem)})")
    reserved = request.cpus is not None or request.mem_bytes is not None
    if reserved and request.time_s is not None and request.time_s >= _MIN_TIME_S and _low(eff.time):
        found.append(
            f"time {format_seconds(request.time_s)}, used "
            f"{format_seconds(usage.wall_s)} ({_pct(eff.time)})"
        )
    return found


def cpu_hours(usages: Iterable[Usage | None]) -> float:
    """The CPU time of these attempts, in hours (unknown ones count as none)."""
    return sum(u.cpu_s for u in usages if u is not None and u.cpu_s is not None) / 3600


def parse_times_s(text: str) -> float | None:
    """Seconds from one of sh's ``times`` figures (``0m1.230000s``, bash: ``0m1.230s``)."""
    match = _TIMES_RE.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)) * 60 + float(match.group(2))


def parse_size_bytes(text: str) -> int | None:
    """Bytes from Slurm's sizes (``1234K``, ``21694M``, ``1.50G``; a bare number is bytes);
    None for an empty or unreadable field. Slurm's units are binary (K = 1024)."""
    match = _MEM_RE.fullmatch(text.strip())
    if match is None:
        return None
    return math.ceil(float(match.group(1)) * _MEM_UNITS[match.group(2).upper()])


def format_bytes(size: int | None) -> str:
    """``1.5G``, ``300M``, ``12K`` (binary units, as Slurm and ``free`` use); ``-`` if unknown."""
    if size is None:
        return "-"
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{size}B"


def format_seconds(seconds: float | None) -> str:
    """A duration as ccctl's tables show it: ``1.50s``, ``12.5s``, ``3m05s``, ``2h10m``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_share(share: float | None) -> str:
    return "-" if share is None else _pct(share)


def usage_of(data: Mapping[str, Any] | None) -> Usage | None:
    """A `Usage` back from its JSON (None stays None)."""
    if data is None:
        return None
    return Usage(data.get("wall_s"), data.get("cpu_s"), data.get("max_rss_bytes"))


def request_of(data: Mapping[str, Any] | None) -> Request | None:
    if data is None:
        return None
    return Request(data.get("cpus"), data.get("mem_bytes"), data.get("time_s"))


def _merged(first: Any, second: Any) -> list[Any]:
    """The fields of ``first``, with those it lacks (None) from ``second``."""
    values = [getattr(first, f.name) for f in fields(first)]
    return [
        getattr(second, f.name) if v is None else v
        for v, f in zip(values, fields(first), strict=True)
    ]


def _share(used: float | None, asked: float | None) -> float | None:
    if used is None or asked is None or asked <= 0:
        return None
    return used / asked


def _low(share: float | None) -> bool:
    return share is not None and share < FAR_MORE_SHARE


def _pct(share: float | None) -> str:
    if share is None:
        return "-"
    return f"{share * 100:.0f}%" if share >= 0.01 else "<1%"
