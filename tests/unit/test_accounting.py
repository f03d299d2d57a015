"""What the scheduler records of an attempt's use, and the memory a retry after
OUT_OF_MEMORY escalates from (see ccd.engine.accounting for the rule)."""

from __future__ import annotations

from pathlib import Path

from ccd.engine import accounting
from ccd.engine.launch import launch_for
from ccd.engine.store import UsageRecord
from ccd.executors.base import Launch
from ccd.models import ExitStatus
from ccd.spec import JobSpec
from ccd.spec.hosts import Resources
from ccd.usage import Request, Usage

GIB_KIB = 1 << 20


def launch(resources: Resources | None) -> Launch:
    run_dir = Path("/r/w/j/1")
    return Launch("w", "j", 1, run_dir, run_dir / "run.sh", ("true",), {}, resources=resources)


def test_the_request_is_the_resources_and_else_the_timeout() -> None:
    res = Resources(cpus=4, mem_kib=2 * GIB_KIB, time_s=3600)
    assert accounting.request_of(launch(res), 60.0) == Request(4, 2 << 30, 3600)
    assert accounting.request_of(launch(None), 60.0) == Request(time_s=60.0)
    assert accounting.request_of(launch(None), None) is None


def test_a_record_is_kept_only_where_something_is_known() -> None:
    ok = ExitStatus(0, usage=Usage(1.0, 0.5, 100))
    record = accounting.record_of("w", "j", 1, ok, launch(None), None)
    assert record == UsageRecord("w", "j", 1, Usage(1.0, 0.5, 100), None)
    assert accounting.record_of("w", "j", 1, ExitStatus(0), launch(None), None) is None


def test_out_of_memory_escalates_from_the_most_the_attempt_is_known_to_have_had() -> None:
    oom = ExitStatus(None, reason="out_of_memory")
    allocated = UsageRecord("w", "j", 1, Usage(max_rss_bytes=3 << 30), Request(mem_bytes=4 << 30))
    assert accounting.oom_mem_kib(oom, allocated) == 4 * GIB_KIB  # the allocation is larger
    peaked = UsageRecord("w", "j", 1, Usage(max_rss_bytes=5 << 30), None)
    assert accounting.oom_mem_kib(oom, peaked) == 5 * GIB_KIB
    assert accounting.oom_mem_kib(ExitStatus(1), allocated) is None  # not a memory failure
    assert accounting.oom_mem_kib(oom, UsageRecord("w", "j", 1, Usage())) is None


def test_the_retry_asks_for_the_factor_times_that_even_without_a_request_of_its_own() -> None:
    spec = JobSpec("j", "shell", run="true", host="hpc", on_retry={"mem": 2.0})
    blind = launch_for(spec, "w", 2, Path("/r"), retries_so_far=1)
    assert blind.resources is None  # blind doubling has nothing to double
    measured = launch_for(spec, "w", 2, Path("/r"), retries_so_far=1, oom_mem_kib=4 * GIB_KIB)
    assert measured.resources is not None and measured.resources.mem_kib == 8 * GIB_KIB
    asked = JobSpec(
        "j",
        "shell",
        run="true",
        host="hpc",
        on_retry={"mem": 2.0},
        resources=Resources(mem_kib=GIB_KIB, cpus=2),
    )
    again = launch_for(asked, "w", 2, Path("/r"), retries_so_far=1, oom_mem_kib=3 * GIB_KIB)
    assert again.resources == Resources(mem_kib=6 * GIB_KIB, cpus=2)  # 2 x 3G beats 2 x 1G
    small = launch_for(asked, "w", 2, Path("/r"), retries_so_far=1, oom_mem_kib=GIB_KIB // 4)
    assert small.resources is not None and small.resources.mem_kib == 2 * GIB_KIB  # blind wins
