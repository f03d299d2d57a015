"""What this machine's /proc says about its processes: boot time, a process's start time,
and whether a pid is still the process that wrote a status record (not a later one reusing it).
"""

from __future__ import annotations

import functools
import os
import time

from ccd.executors.base import StatusRecord

_CLK_TCK = os.sysconf("SC_CLK_TCK")
# Float rounding in epoch seconds, far below the 1/100 s steps of the clocks compared.
_CLOCK_SLACK_S = 0.001


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


def proc_stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3 onwards (state, ppid, ...) of ``/proc/PID/stat``, so field N is at index N-3;
    None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: count from after its last ")".
    return data[data.rfind(b")") + 2 :].split()


def proc_start_ticks(pid: int) -> int | None:
    """Field 22 (starttime) of ``/proc/PID/stat``, or None if there is no such process."""
    fields = proc_stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
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
