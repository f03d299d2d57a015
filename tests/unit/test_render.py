"""ccctl's text output keeps one row per job whatever a reason holds."""

from __future__ import annotations

from cli import render


def test_a_multi_line_reason_stays_on_its_row() -> None:
    status = {
        "workflow": {"id": "w1", "name": "demo", "state": "failed"},
        "jobs": [
            {
                "name": "a",
                "state": "failed",
                "exit_code": None,
                "signal": None,
                "attempts": 1,
                "duration_s": None,
                "reason": "could not start: sbatch: error: Batch job\n"
                "sbatch: error:   submission failed\n",
            },
            {
                "name": "b",
                "state": "skipped",
                "exit_code": None,
                "signal": None,
                "attempts": 0,
                "duration_s": None,
                "reason": "ancestor 'a' failed",
            },
        ],
    }
    table = render.summary(status).split("\n\n")[0].splitlines()
    assert len(table) == 3  # header and one row per job
    assert table[1].endswith(
        "could not start: sbatch: error: Batch job sbatch: error: submission failed"
    )
    line = render.event_line("w1", "a", "failed", "one\ntwo", 0.0)
    assert "\n" not in line and line.endswith("a failed  one two")


def test_the_usage_summary_names_jobs_that_asked_far_more_than_they_used() -> None:
    gib = 1 << 30
    job = {
        "name": "train",
        "state": "succeeded",
        "usage": {"wall_s": 600.0, "cpu_s": 600.0, "max_rss_bytes": gib // 2},
        "request": {"cpus": 8, "mem_bytes": 16 * gib, "time_s": 86400.0},
        "efficiency": {"cpu": 0.125, "mem": 1 / 32, "time": 600 / 86400},
    }
    quiet = {"name": "idle", "state": "succeeded", "usage": None, "request": None}
    status = {"workflow": {"id": "w", "name": "n", "state": "succeeded"}, "jobs": [job, quiet]}
    line = render.usage_summary(status)
    assert line == (
        "used 0.167 CPU hours over 1 jobs; asked for far more than used: train (cpus 8, "
        "used 1.0 (12%); mem 16G, peak 512M (3%); time 24h00m, used 10m00s (<1%))"
    )
    table = render.usage_table(status).splitlines()
    assert table[1].split() == [
        "train",
        "succeeded",
        "10m00s",
        "10m00s",
        "12%",
        "512M",
        "3%",
        "<1%",
        "8",
        "cpu,",
        "16G,",
        "24h00m",
    ]
    assert table[2].split()[2:] == ["-"] * 7
    assert render.usage_summary({"jobs": [quiet]}) is None
