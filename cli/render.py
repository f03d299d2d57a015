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


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def exit_text(job: Mapping[str, Any]) -> str:
    if job.get("signal") is not None:
        return f"sig {job['signal']}"
    code = job.get("exit_code")
    return "-" if code is None else str(code)


def summary(status: Mapping[str, Any]) -> str:
    """The table printed when a run ends: job, state, exit code, attempts, duration."""
    wf = status["workflow"]
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
    hosts = "".join(
        f"\nhost {name}: {h['state']}" + (f" ({h['reason']})" if h.get("reason") else "")
        for name, h in status.get("hosts", {}).items()
        if h["state"] != "ok"
    )
    return (
        f"{body}\n\nworkflow {wf['id']} ({wf['name']}): {wf['state']}  {counts_line(status)}{hosts}"
    )


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
