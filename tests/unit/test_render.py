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
