"""Progress markers in job logs, and reading a growing log incrementally.

A job reports progress by printing a line that starts exactly (no leading blanks) with one of

    # ccd progress=40
    # ccd progress=40 loading data
    # cloudmesh status=running progress=40 pid=123

the last being cloudmesh-cc's format, whose key=value pairs may come in any order (its
``progress()`` helper also adds e.g. ``time='2022-08-05 16:29:40.228901'``). Percentages are
integers clamped to 0..100. A marker only informs: it never overrides how the job exits.
"""

from __future__ import annotations

import re

from ccd.models import Progress

MAX_LINE_BYTES = 64 * 1024

_CCD = re.compile(r"# ccd[ \t]+progress=(-?[0-9]+)(?:[ \t]+(.*))?")
_CLOUDMESH = re.compile(r"# cloudmesh[ \t](.*)")
_CLOUDMESH_PROGRESS = re.compile(r"(?:^|[ \t])progress=(-?[0-9]+)(?=[ \t]|$)")
# Lines that might be markers, found in a whole chunk at C speed before any is parsed.
_CANDIDATE = re.compile(rb"^# (?:ccd|cloudmesh)[ \t][^\n]*", re.MULTILINE)


def parse(line: str) -> Progress | None:
    """The progress marker on ``line``, or None if it holds none."""
    line = line.rstrip("\r\n")
    match = _CCD.fullmatch(line)
    if match is not None:
        message = (match.group(2) or "").strip() or None
        return Progress(percent=_percent(match.group(1)), message=message)
    match = _CLOUDMESH.fullmatch(line)
    if match is not None:
        found = _CLOUDMESH_PROGRESS.search(match.group(1))
        if found is not None:
            return Progress(percent=_percent(found.group(1)))
    return None


def _percent(digits: str) -> int:
    """A marker's number, clamped to 0-100; a huge one is not converted (Python refuses to
    turn over 4300 digits into an int, and a job's output must never break its reader)."""
    if len(digits) > 4:
        return 0 if digits.startswith("-") else 100
    return max(0, min(100, int(digits)))


class LogTail:
    """What has been read of one log: feed it each new chunk, in order, as read from the byte
    offset it keeps. Only complete lines are parsed; a line longer than ``max_line_bytes`` is
    dropped rather than buffered without bound.

    ``offset`` is where the next read starts. ``resume_offset`` is the end of the last
    complete line: the one to save, since a later ``LogTail(resume_offset)`` re-reads the
    partial line this one holds in memory."""

    __slots__ = ("_buffer", "_line_offset", "_max_line_bytes", "_offset", "_skipping")

    def __init__(self, offset: int = 0, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._offset = offset
        self._line_offset = offset
        self._max_line_bytes = max_line_bytes
        self._buffer = b""
        self._skipping = False  # inside an over-long line: discard up to its newline

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def resume_offset(self) -> int:
        return self._line_offset

    def feed(self, data: bytes) -> Progress | None:
        """Consume the next chunk; the last marker among the lines it completes, if any."""
        chunk_start = self._offset
        self._offset += len(data)
        start = 0
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return None
            self._skipping = False
            start = newline + 1
            self._line_offset = chunk_start + start
        last_newline = data.rfind(b"\n", start)
        if last_newline < 0:
            self._keep_partial(self._buffer + data[start:])
            return None
        lines = self._buffer + data[start:last_newline]
        self._line_offset = chunk_start + last_newline + 1
        self._keep_partial(data[last_newline + 1 :])
        return _last_marker(lines)

    def _keep_partial(self, partial: bytes) -> None:
        if len(partial) > self._max_line_bytes:
            self._buffer = b""
            self._skipping = True
        else:
            self._buffer = partial


def _last_marker(lines: bytes) -> Progress | None:
    for candidate in reversed(_CANDIDATE.findall(lines)):
        progress = parse(candidate.decode("utf-8", errors="replace"))
        if progress is not None:
            return progress
    return None
