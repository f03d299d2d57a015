"""The engine benchmark still runs: each of its runners completes every DAG it is given (a
runner whose job fails raises), and the table has a row per shape. It asserts nothing about
time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import ccd

BENCH = Path(ccd.__file__).resolve().parent.parent / "bench" / "engine_bench.py"


def test_engine_bench_runs_every_runner_on_every_shape(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        str(BENCH),
        "--sizes",
        "20",
        "--repeat",
        "1",
        "--load-jobs",
        "0",
        "--outputs-jobs",
        "5",
        "--sweep-jobs",
        "30",
        "--tmp-dir",
        str(tmp_path),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("shape"))) + 2 :]
    rows = {line.split()[0]: line.split() for line in table[: table.index("")]}
    assert set(rows) == {"chain", "fan", "layered"}
    for cells in rows.values():
        # shape, N, then the engine's, its submit's, the bare dispatcher's and the durable
        # floor's seconds, make's (n/a without GNU make) and the asyncio dispatcher's
        engine_s, submit_s, _, bare_s, floor_s = (float(c) for c in cells[2:7])
        assert engine_s > submit_s > 0 and bare_s > 0 and floor_s > 0, cells
        assert float(cells[8]) > 0, cells
    assert "cost of outputs" in done.stdout  # the dynamic sections ran to their end
    assert "30 members committed ready" in done.stdout
    assert list(tmp_path.iterdir()) == []  # its scratch tree is removed


HTTP_BENCH = BENCH.with_name("http_bench.py")


def test_http_bench_measures_the_listener_off_and_on() -> None:
    argv = [sys.executable, str(HTTP_BENCH), "--idle-s", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("figure"))
    assert header.split()[1:] == ["off", "on", "on+stream"]
    rss = next(line for line in done.stdout.splitlines() if line.startswith("RSS"))
    assert len(re.findall(r"\d+\.\d MB", rss)) == 3, rss
