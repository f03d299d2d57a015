"""What attempts used, as the scheduler records it: one `UsageRecord` per attempt, written with
its end (the figures its backend measured, and what it asked for), completed later where a
batch system's accounting comes after the end (Slurm's sacct); and the memory a retry after
OUT_OF_MEMORY escalates from.

On a retry after OUT_OF_MEMORY with ``on_retry: {mem: xF}``, the next attempt asks for F
times the most the failed one is known to have had: its allocation as the batch system
reports it (sacct's ReqMem) or its measured peak, whichever is larger. That escalates a job
that asked for no memory of its own (the cluster's default applied), which blind
multiplication cannot, and follows the cluster's real figure rather than the file's. Where
neither is known, the blind escalation (F to the number of retries, times the job's own
request) is what remains; both apply, and the larger wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ccd.engine.store import UsageRecord
from ccd.executors.base import Launch
from ccd.models import ExitStatus, failure_class
from ccd.spec.hosts import Resources
from ccd.usage import Request, Usage, efficiency


def request_of(launch: Launch | None, timeout_s: float | None) -> Request | None:
    """What an attempt asked for as ccd knows it: its resources (on any host), its
    ``timeout:`` as the time limit where it has no walltime. None if nothing."""
    res = launch.resources if launch is not None else None
    mem = res.mem_kib * 1024 if res is not None and res.mem_kib is not None else None
    time_s = res.time_s if res is not None and res.time_s is not None else timeout_s
    request = Request(res.cpus if res is not None else None, mem, time_s)
    return request or None


def record_of(
    workflow_id: str,
    job: str,
    attempt: int,
    status: ExitStatus,
    launch: Launch | None,
    timeout_s: float | None,
) -> UsageRecord | None:
    """The usage record of an attempt that ended with ``status`` (None: nothing known)."""
    request = request_of(launch, timeout_s)
    if status.usage is None and request is None:
        return None
    return UsageRecord(workflow_id, job, attempt, status.usage or Usage(), request)


def usage_json(record: UsageRecord | None) -> dict[str, Any]:
    """An attempt's ``usage``, ``request`` and ``efficiency`` as status JSON has them (null
    where nothing is known)."""
    if record is None:
        return {"usage": None, "request": None, "efficiency": None}
    request = record.request
    return {
        "usage": record.usage.to_json(),
        "request": request.to_json() if request else None,
        "efficiency": efficiency(record.usage, request).to_json(),
    }


def oom_mem_kib(status: ExitStatus, record: UsageRecord | None) -> int | None:
    """For an attempt that died of OUT_OF_MEMORY: the most memory it is known to have had
    (KiB), to escalate from; None otherwise, or if unknown."""
    if failure_class(status) != "out_of_memory" or record is None:
        return None
    known = [record.usage.max_rss_bytes, record.request.mem_bytes if record.request else None]
    figures = [b for b in known if b is not None]
    return math.ceil(max(figures) / 1024) if figures else None


def escalated(
    resources: Resources | None, on_retry: Mapping[str, float], floor_kib: int | None
) -> Resources | None:
    """``resources`` for a retry after OUT_OF_MEMORY: at least ``mem`` times ``floor_kib``."""
    factor = on_retry.get("mem")
    if floor_kib is None or factor is None:
        return resources
    base = resources or Resources()
    wanted = math.ceil(floor_kib * factor)
    if base.mem_kib is not None and base.mem_kib >= wanted:
        return base
    return replace(base, mem_kib=wanted)
