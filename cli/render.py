"""Text rendering of workflow status: summary tables, event lines, the live terminal view.

Works on the JSON shape of a status (``WorkflowStatus.to_json()``), so the in-process runner
and the daemon client render the same way.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from ccd.usage import (
    Usage,
    cpu_hours,
    format_bytes,
    format_seconds,
    format_share,
    oversized,
    request_of,
    usage_of,
)

STATE_ORDER = (
    "running",
    "submitted",
    "ready",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
)
_BAR_WIDTH = 20


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


duration = format_seconds  # a duration as the tables show it: 1.50s, 12.5s, 3m05s, 2h10m


def exit_text(job: Mapping[str, Any]) -> str:
    if job.get("signal") is not None:
        return f"sig {job['signal']}"
    code = job.get("exit_code")
    return "-" if code is None else str(code)


def summary(status: Mapping[str, Any], *, usage: bool = False) -> str:
    """The table printed when a run ends: job, state, exit code, attempts, duration; with
    ``usage``, what each job used against what it asked for instead. Then the workflow's
    line, and what the jobs used in all (where known)."""
    text = _jobs_summary(status) if not usage else usage_table(status) + _workflow_line(status)
    spent = usage_summary(status)
    return f"{text}\n{spent}" if spent else text


def _jobs_summary(status: Mapping[str, Any]) -> str:
    rows = [
        (
            j["name"],
            j["state"],
            exit_text(j),
            j["attempts"],
            duration(j["duration_s"]),
            one_line(j.get("reason") or ""),
        )
        for j in status["jobs"]
    ]
    body = table(("JOB", "STATE", "EXIT", "ATTEMPTS", "DURATION", "REASON"), rows)
    return body + _workflow_line(status)


def _workflow_line(status: Mapping[str, Any]) -> str:
    wf = status["workflow"]
    hosts = "".join(
        f"\nhost {name}: {h['state']}" + (f" ({h['reason']})" if h.get("reason") else "")
        for name, h in status.get("hosts", {}).items()
        if h["state"] != "ok"
    )
    return f"\n\nworkflow {wf['id']} ({wf['name']}): {wf['state']}  {counts_line(status)}{hosts}"


def counts_line(status: Mapping[str, Any]) -> str:
    counts = Counter(j["state"] for j in status["jobs"])
    return ", ".join(f"{counts[s]} {s}" for s in STATE_ORDER if counts[s])


def event_line(workflow_id: str, job: str | None, state: str, reason: str | None, at: float) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(at))
    subject = job if job is not None else "(workflow)"
    suffix = f"  {one_line(reason)}" if reason else ""
    return f"{stamp} {workflow_id} {subject} {state}{suffix}"


def one_line(text: str) -> str:
    """A reason (say, a tool's two-line error) that keeps a table row or event line whole."""
    return " ".join(text.split())


def progress_bar(percent: int | None) -> str:
    if percent is None:
        return " " * (_BAR_WIDTH + 6)
    filled = round(_BAR_WIDTH * percent / 100)
    return f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {percent:3d}%"


class LiveView:
    """Redraws a status block in place on a terminal (ANSI: cursor up, clear line)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lines_drawn = 0
        self._started = time.monotonic()

    def draw(self, status: Mapping[str, Any]) -> None:
        lines = self._compose(status)
        parts = [f"\x1b[{self._lines_drawn}F"] if self._lines_drawn else []
        parts += [f"\x1b[2K{line}\n" for line in lines]
        if len(lines) < self._lines_drawn:  # clear leftovers of a taller previous frame
            parts += ["\x1b[2K\n"] * (self._lines_drawn - len(lines))
            parts.append(f"\x1b[{self._lines_drawn - len(lines)}F")
        self._out.write("".join(parts))
        self._out.flush()
        self._lines_drawn = len(lines)

    def _compose(self, status: Mapping[str, Any]) -> list[str]:
        cols, rows = shutil.get_terminal_size((100, 30))
        wf = status["workflow"]
        elapsed = duration(time.monotonic() - self._started)
        header = f"{wf['name']} ({wf['id']}) {wf['state']}  {elapsed}  {counts_line(status)}"
        jobs = sorted(status["jobs"], key=lambda j: STATE_ORDER.index(j["state"]))
        room = max(1, rows - 3)
        width = max((len(j["name"]) for j in jobs[:room]), default=4)
        body = [
            f"{j['name'].ljust(width)}  {j['state']:<9}  {progress_bar(j.get('progress'))}"
            for j in jobs[:room]
        ]
        if len(jobs) > room:
            body.append(f"... and {len(jobs) - room} more")
        return [line[: cols - 1] for line in [header, *body]]


def usage_table(status: Mapping[str, Any]) -> str:
    """What each job's latest attempt used against what it asked for, with seff's shares:
    CPU (of wall time x CPUs), memory (peak of the request) and time (of the limit)."""
    rows = []
    for j in status["jobs"]:
        usage, eff = _usage_of(j), j.get("efficiency") or {}
        rows.append(
            (
                j["name"],
                j["state"],
                format_seconds(usage.wall_s),
                format_seconds(usage.cpu_s),
                format_share(eff.get("cpu")),
                format_bytes(usage.max_rss_bytes),
                format_share(eff.get("mem")),
                format_share(eff.get("time")),
                _asked(j.get("request")),
            )
        )
    headers = ("JOB", "STATE", "WALL", "CPU", "CPU%", "MAXRSS", "MEM%", "TIME%", "ASKED")
    return table(headers, rows)


def usage_summary(status: Mapping[str, Any], most: int = 5) -> str | None:
    """One line for the end of a run: the CPU hours used, and the jobs that asked for far
    more than they used (None if no job has figures)."""
    jobs = [j for j in status["jobs"] if j.get("usage")]
    if not jobs:
        return None
    hours = cpu_hours(_usage_of(j) for j in jobs)
    line = f"used {hours:.3g} CPU hours over {len(jobs)} jobs"
    wasteful = [
        f"{j['name']} ({'; '.join(found)})"
        for j in jobs
        if (found := oversized(_usage_of(j), request_of(j.get("request"))))
    ]
    if wasteful:
        more = f"; and {len(wasteful) - most} more" if len(wasteful) > most else ""
        line += f"; asked for far more than used: {'; '.join(wasteful[:most])}{more}"
    return line


def _usage_of(job: Mapping[str, Any]) -> Usage:
    return usage_of(job.get("usage")) or Usage()


def _asked(request: Mapping[str, Any] | None) -> str:
    if not request:
        return "-"
    parts = []
    if request.get("cpus") is not None:
        parts.append(f"{request['cpus']} cpu")
    if request.get("mem_bytes") is not None:
        parts.append(format_bytes(request["mem_bytes"]))
    if request.get("time_s") is not None:
        parts.append(format_seconds(request["time_s"]))
    return ", ".join(parts) or "-"
