"""Progress markers: parsing single lines and tailing a log chunk by chunk."""

from __future__ import annotations

import pytest

from ccd.engine.progress import LogTail, parse
from ccd.models import Progress


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# ccd progress=40", Progress(40)),
        ("# ccd progress=40\n", Progress(40)),
        ("# ccd progress=40\r\n", Progress(40)),
        ("# ccd progress=40 loading data", Progress(40, "loading data")),
        ("# ccd progress=40   spaced out  ", Progress(40, "spaced out")),
        ("# ccd progress=0", Progress(0)),
        ("# ccd progress=100 done", Progress(100, "done")),
        ("# cloudmesh status=running progress=50 pid=123", Progress(50)),
        ("# cloudmesh progress=7 status=running", Progress(7)),
        ("# cloudmesh status=done progress=100 pid=$$", Progress(100)),
        (
            "# cloudmesh status=ready progress=30 pid=9 time='2022-08-05 16:29:40.228901' a=b",
            Progress(30),
        ),
    ],
)
def test_parse_markers(line: str, expected: Progress) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        ("# ccd progress=150", 100),
        ("# ccd progress=-5", 0),
        ("# cloudmesh status=running progress=250 pid=1", 100),
        ("# cloudmesh status=running progress=-1", 0),
        ("# ccd progress=" + "9" * 5000, 100),  # more digits than int() takes
        ("# cloudmesh progress=-" + "9" * 5000, 0),
    ],
)
def test_parse_clamps(line: str, percent: int) -> None:
    progress = parse(line)
    assert progress is not None
    assert progress.percent == percent


@pytest.mark.parametrize(
    "line",
    [
        " # ccd progress=40",  # not anchored at line start
        "\t# cloudmesh status=running progress=40",
        "echo '# ccd progress=40'",
        "x # ccd progress=40",
        "# ccd progress=40.5",
        "# ccd progress=forty",
        "# ccd progress=",
        "# ccd progress=40%",
        "# ccd progress=+40",
        "# ccd progress=4_0",
        "# ccd progress=٤٠",  # non-ASCII digits
        "# ccd percent=40",
        "# ccdprogress=40",
        "# cloudmesh status=running progress=50.5 pid=1",
        "# cloudmesh status=running pid=1",
        "# cloudmesh status=running myprogress=50",
        "# cloudmesh status=running progress=50x",
        "# cloudmeshy progress=50",
        "# CCD progress=40",
        "",
        "progress=40",
        "\x00\xff garbage",
    ],
)
def test_parse_rejects(line: str) -> None:
    assert parse(line) is None


def test_tail_returns_last_marker_of_chunk() -> None:
    tail = LogTail()
    data = b"a\n# ccd progress=10\nb\n# cloudmesh status=running progress=20\nc\n"
    assert tail.feed(data) == Progress(20)
    assert tail.offset == len(data)
    assert tail.resume_offset == len(data)


def test_tail_skips_invalid_later_candidates() -> None:
    tail = LogTail()
    assert tail.feed(b"# ccd progress=10 ok\n# ccd progress=bad\n") == Progress(10, "ok")


def test_tail_none_without_markers() -> None:
    tail = LogTail()
    assert tail.feed(b"hello\nworld\n") is None
    assert tail.feed(b"") is None
    assert tail.offset == 12


def test_tail_joins_partial_lines_across_feeds() -> None:
    tail = LogTail()
    assert tail.feed(b"x\n# ccd prog") is None
    assert tail.offset == 12
    assert tail.resume_offset == 2  # the partial line will be re-read after a restart
    assert tail.feed(b"ress=6") is None
    assert tail.feed(b"6 two thirds\nmore") == Progress(66, "two thirds")
    assert tail.offset == 35
    assert tail.resume_offset == 31  # before "more"


def test_tail_marker_needs_its_newline() -> None:
    tail = LogTail()
    assert tail.feed(b"# ccd progress=5") is None
    assert tail.feed(b"\n") == Progress(5)


def test_tail_line_start_across_feeds() -> None:
    # A marker-looking text that continues a line is not at a line start.
    tail = LogTail()
    assert tail.feed(b"abc") is None
    assert tail.feed(b"# ccd progress=5\n") is None


def test_tail_resumes_from_offset() -> None:
    log = b"# ccd progress=10\n# ccd progress=20\n# ccd pro"
    first = LogTail()
    first.feed(log)
    resumed = LogTail(first.resume_offset)
    rest = log[resumed.offset :] + b"gress=30\n"
    assert resumed.feed(rest) == Progress(30)
    assert resumed.offset == len(log) + len(b"gress=30\n")


def test_tail_drops_overlong_line() -> None:
    tail = LogTail(max_line_bytes=16)
    chunks = [b"ok\n# ccd progress=1 " + b"x" * 20, b"yyyy\n# ccd progress=9", b"\n"]
    assert tail.feed(chunks[0]) is None
    assert tail.resume_offset == 3
    # The over-long line is discarded up to its newline; the next complete line counts.
    assert tail.feed(chunks[1]) is None
    assert tail.feed(chunks[2]) == Progress(9)
    assert tail.offset == tail.resume_offset == sum(map(len, chunks))


def test_tail_overlong_line_spanning_many_feeds() -> None:
    tail = LogTail(max_line_bytes=8)
    tail.feed(b"0123456789")  # over the cap: dropped
    assert tail.feed(b"abcdefghij") is None  # still the same line
    assert tail.feed(b"# ccd progress=3\n") is None  # its end, not a line start
    assert tail.feed(b"# ccd progress=4\n") == Progress(4)
    assert tail.offset == tail.resume_offset == 10 + 10 + 17 + 17


def test_tail_tolerates_invalid_utf8() -> None:
    tail = LogTail()
    assert tail.feed(b"\xff\xfe\n# ccd progress=8 caf\xc3\xa9 \xff\n") == Progress(8, "café \ufffd")


def test_tail_starting_offset() -> None:
    tail = LogTail(100)
    tail.feed(b"abc\n")
    assert tail.offset == tail.resume_offset == 104
