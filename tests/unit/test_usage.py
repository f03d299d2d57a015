"""Usage figures, efficiency (as seff reports it) and the "asked for far more" verdict."""

from __future__ import annotations

import pytest

from ccd.usage import (
    Efficiency,
    Request,
    Usage,
    cpu_hours,
    efficiency,
    format_bytes,
    oversized,
    parse_size_bytes,
    parse_times_s,
)

GIB = 1 << 30


def test_efficiency_is_cpu_over_wall_times_cpus_peak_over_mem_wall_over_limit() -> None:
    usage = Usage(wall_s=100.0, cpu_s=150.0, max_rss_bytes=GIB)
    request = Request(cpus=4, mem_bytes=4 * GIB, time_s=400.0)
    assert efficiency(usage, request) == Efficiency(cpu=0.375, mem=0.25, time=0.25)


def test_without_a_request_cpu_counts_against_one_cpu_and_the_rest_is_unknown() -> None:
    assert efficiency(Usage(wall_s=10.0, cpu_s=20.0), None) == Efficiency(cpu=2.0)
    assert efficiency(None, None) == Efficiency()
    assert efficiency(Usage(wall_s=0.0, cpu_s=0.0), Request(cpus=1)).cpu is None


def test_oversized_names_only_big_requests_used_far_below() -> None:
    usage = Usage(wall_s=60.0, cpu_s=55.0, max_rss_bytes=300 << 20)
    request = Request(cpus=8, mem_bytes=8 * GIB, time_s=4 * 3600.0)
    assert oversized(usage, request) == [
        "cpus 8, used 0.9 (11%)",
        "mem 8.0G, peak 300M (4%)",
        "time 4h00m, used 1m00s (<1%)",
    ]
    # Small requests are not worth a word, and what was used well is not flagged.
    assert oversized(usage, Request(cpus=1, mem_bytes=512 << 20, time_s=300.0)) == []
    assert oversized(Usage(wall_s=3000.0, cpu_s=7000.0, max_rss_bytes=3 * GIB),
                     Request(cpus=2, mem_bytes=4 * GIB, time_s=3600.0)) == []  # fmt: skip
    assert oversized(None, request) == []
    assert oversized(usage, Request(time_s=4 * 3600.0)) == []  # a local job's timeout
    assert oversized(Usage(), request) == []  # unknown use: no verdict


def test_merged_over_fills_the_gaps_only() -> None:
    sacct = Usage(wall_s=5.0, cpu_s=None, max_rss_bytes=100)
    wrapper = Usage(wall_s=4.9, cpu_s=1.2, max_rss_bytes=None)
    assert sacct.merged_over(wrapper) == Usage(5.0, 1.2, 100)
    assert Request(cpus=2).merged_over(Request(cpus=1, mem_bytes=7)) == Request(2, 7, None)
    assert not Request() and Request(time_s=1.0)


def test_cpu_hours_sums_what_is_known() -> None:
    assert cpu_hours([Usage(cpu_s=1800.0), None, Usage(), Usage(cpu_s=5400.0)]) == 2.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0m0.260000s", 0.26), ("0m1.234s", 1.234), ("2m3.5s", 123.5), ("junk", None)],
)
def test_times_figures_from_dash_and_bash(text: str, seconds: float | None) -> None:
    assert parse_times_s(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("text", "size"),
    [("219944K", 219944 << 10), ("21694M", 21694 << 20), ("1.5G", 3 << 29), ("300", 300),
     ("", None), ("16?", None), ("4000Mc", None)],
)  # fmt: skip
def test_slurm_sizes(text: str, size: int | None) -> None:
    assert parse_size_bytes(text) == size


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (None, 512, 2048, 300 << 20, 3 << 29)] == [
        "-", "512B", "2.0K", "300M", "1.5G",
    ]  # fmt: skip
