"""A job's outputs file: key=value lines, checked, with a size cap."""

from __future__ import annotations

import pytest

from ccd.engine.results import (
    MAX_OUTPUTS_BYTES,
    ResultError,
    Results,
    collect,
    parse_new_jobs,
    parse_outputs,
)


def test_key_value_lines() -> None:
    assert parse_outputs(b"a=1\n\nkey_2-x=x=y \nc=\na=2\n") == {
        "a": "2",
        "key_2-x": "x=y ",
        "c": "",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a=1\njust words\n", "line 2: no '='"),
        (b"\x00\x01\x02=\x03", "binary"),
        (b"a=\xff\xfe\n", "not UTF-8"),
        (b"bad key=1\n", "invalid key 'bad key'"),
        (b"a=" + b"x" * MAX_OUTPUTS_BYTES, "over the limit"),
    ],
)
def test_bad_outputs_files_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(ResultError, match=message):
        parse_outputs(data)


def test_an_empty_new_jobs_file_is_none() -> None:
    assert parse_new_jobs(b" \n") is None
    assert parse_new_jobs(b"jobs: {}\n") == "jobs: {}\n"


async def test_collect_reads_one_byte_past_each_limit() -> None:
    asked: list[tuple[str, int]] = []

    async def read(name: str, limit: int) -> bytes:
        asked.append((name, limit))
        return b"k=v\n" if name == "ccd-outputs" else b""

    assert await collect(read) == Results({"k": "v"}, None)
    assert asked[0] == ("ccd-outputs", MAX_OUTPUTS_BYTES + 1)
