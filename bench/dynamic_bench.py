#!/usr/bin/env python3
"""What dynamic workflows cost: outputs per job, and a 10,000-job sweep.

- **outputs**: the same chain of N shell jobs, run in the same process one after the other
  (interleaved, median of R): each job runs ``sh -c 'echo k=1 >> FILE' sh ARG``, where FILE
  is /dev/null and ARG a constant in the baseline, and FILE is ``$CCD_OUTPUTS`` and ARG
  ``${{ jobs.PREVIOUS.outputs.k }}`` with outputs. The difference per job is what handing a
  value on costs: reading and checking the file, storing it with the success, resolving the
  child's reference.
- **sweep**: a matrix of N combinations decided at submit (load + submit time of the file),
  and one decided at run time from a parent's output (time from the parent's exit to its N
  members committed ready, as one transaction). Members are parked on a host that starts
  nothing, so only the expansion is timed.

A benchmark, not a test: it prints figures and asserts nothing about time. From the
repository root (bench/engine_bench.py runs the same sections after its table)::

    python bench/dynamic_bench.py --outputs-jobs 300 --sweep-jobs 10000
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ccd import logs  # noqa: E402
from ccd.engine import Engine, JobEvent, Limits  # noqa: E402
from ccd.engine.results import collect  # noqa: E402
from ccd.executors.base import OUTPUTS_NAME, Handle  # noqa: E402
from ccd.executors.local import LocalExecutor  # noqa: E402
from ccd.spec import HostSpec, load  # noqa: E402


def chain_yaml(n: int, with_outputs: bool) -> str:
    lines = ["name: outputs-bench", "jobs:"]
    for i in range(n):
        target = '\\"$CCD_OUTPUTS\\"' if with_outputs else "/dev/null"
        arg = f"${{{{ jobs.j{i - 1}.outputs.k }}}}" if with_outputs and i else "1"
        needs = f", needs: [j{i - 1}]" if i else ""
        lines.append(f'  j{i}: {{run: "echo k=1 >> {target}", args: ["{arg}"]{needs}}}')
    return "\n".join(lines) + "\n"


async def _run_file(path: Path, state: Path) -> float:
    spec = load(path)
    engine = await Engine.open(state, spec.hosts, Limits())
    try:
        start = time.perf_counter()
        wf_id = await engine.submit(spec)
        state_ = await engine.wait(wf_id)
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    if state_ != "succeeded":
        raise RuntimeError(f"the benchmark workflow {path.name} ended {state_}")
    return elapsed


def outputs_section(n: int, repeat: int, root: Path) -> list[str]:
    files = {}
    for variant in ("plain", "outputs"):
        files[variant] = root / f"chain-{variant}.yaml"
        files[variant].write_text(chain_yaml(n, variant == "outputs"))
    times: dict[str, list[float]] = {"plain": [], "outputs": []}
    for r in range(repeat):
        for variant, path in files.items():
            state = Path(tempfile.mkdtemp(prefix=f"out-{variant}-{r}-", dir=root))
            times[variant].append(asyncio.run(_run_file(path, state)))
    plain, outputs = (statistics.median(times[v]) for v in ("plain", "outputs"))
    none_us, some_us = asyncio.run(_collect_us(root))
    return [
        f"outputs, chain of {n} sh jobs, median of {repeat} (same run, interleaved):",
        f"  without outputs  {plain:7.3f} s  {plain / n * 1000:6.2f} ms/job",
        f"  with outputs     {outputs:7.3f} s  {outputs / n * 1000:6.2f} ms/job"
        "  (each writes k=1, the next reads it as an argument)",
        f"  cost of outputs  {(outputs - plain) / n * 1000:+6.2f} ms/job",
        f"  reading a succeeded job's result files, alone: {none_us:.0f} us/job when it wrote"
        f" none (every job pays this), {some_us:.0f} us/job for 3 outputs",
    ]


async def _collect_us(root: Path, n: int = 2000) -> tuple[float, float]:
    """The engine-side floor of the feature: `collect` on local run dirs, no processes."""
    executor = LocalExecutor()
    costs = []
    for outputs in (b"", b"a=1\nb=two\nc=3.0\n"):
        handles = []
        for i in range(n):
            run_dir = root / "collect" / str(len(outputs)) / str(i)
            run_dir.mkdir(parents=True)
            if outputs:
                (run_dir / OUTPUTS_NAME).write_bytes(outputs)
            handles.append(Handle("wf", f"j{i}", 1, run_dir, None, "local"))
        start = time.perf_counter()
        for handle in handles:
            await collect(functools.partial(executor.read_file, handle))
        costs.append((time.perf_counter() - start) / n * 1e6)
    return costs[0], costs[1]


def sweep_yaml(n: int, runtime: bool) -> str:
    if runtime:
        values = '"${{ jobs.split.outputs.values }}"'
        split = (
            "  split:\n    run: python3 -c \"import json; print('values=' + "
            f'json.dumps(list(range({n}))))" >> "$CCD_OUTPUTS"\n'
        )
        needs = "    needs: [split]\n"
    else:
        values, split, needs = json.dumps(list(range(n))), "", ""
    return (
        f"name: sweep-bench\njobs:\n{split}  sweep:\n{needs}    host: parked\n"
        f"    matrix: {{i: {values}}}\n    run: 'true'\n"
    )


PARKED = {"parked": HostSpec("parked", "local", max_jobs=0)}


async def _static_sweep(path: Path, state: Path) -> tuple[float, float, int]:
    start = time.perf_counter()
    spec = load(path, extra_hosts=PARKED)
    loaded = time.perf_counter()
    engine = await Engine.open(state, spec.hosts, Limits())
    try:
        before = time.perf_counter()
        await engine.submit(spec)
        submitted = time.perf_counter()
    finally:
        await engine.close()
    return loaded - start, submitted - before, len(spec.jobs)


async def _runtime_sweep(path: Path, state: Path, n: int) -> float:
    spec = load(path, extra_hosts=PARKED)
    engine = await Engine.open(state, spec.hosts, Limits())
    ready = asyncio.Event()
    seen: dict[str, float] = {}

    def listen(event: JobEvent) -> None:
        if event.job == "split" and event.state == "succeeded":
            seen["exit"] = event.at  # when the job ended, from its status record
        elif event.job and event.job.startswith("sweep.") and event.state == "ready":
            seen["ready"] = seen.get("ready", 0) + 1
            if seen["ready"] == n:
                seen["committed"] = time.time()
                ready.set()

    engine.subscribe(listen)
    try:
        await engine.submit(spec)
        await asyncio.wait_for(ready.wait(), 300)
    finally:
        await engine.close()
    return seen["committed"] - seen["exit"]


def sweep_section(n: int, root: Path) -> list[str]:
    static, runtime = root / "sweep-static.yaml", root / "sweep-runtime.yaml"
    static.write_text(sweep_yaml(n, runtime=False))
    runtime.write_text(sweep_yaml(n, runtime=True))
    load_s, submit_s, jobs = asyncio.run(
        _static_sweep(static, Path(tempfile.mkdtemp(prefix="sweep-s-", dir=root)))
    )
    expand_s = asyncio.run(
        _runtime_sweep(runtime, Path(tempfile.mkdtemp(prefix="sweep-r-", dir=root)), n)
    )
    return [
        f"a sweep of {n} combinations:",
        f"  decided at submit: load {load_s:6.2f} s + submit {submit_s:6.2f} s"
        f"  ({jobs} jobs: members and their group)",
        f"  decided at run time: {expand_s:6.2f} s from the parent's exit to {n} members"
        " committed ready (one transaction)",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs-jobs", type=int, default=300, help="0: skip")
    parser.add_argument("--sweep-jobs", type=int, default=10_000, help="0: skip")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logs.configure(None, console=sys.stderr, level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="ccd-bench-dyn-", dir=args.tmp_dir))
    try:
        print("\n".join(sections(args.outputs_jobs, args.sweep_jobs, args.repeat, root)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sections(outputs_jobs: int, sweep_jobs: int, repeat: int, root: Path) -> list[str]:
    lines: list[str] = []
    if outputs_jobs:
        lines += outputs_section(outputs_jobs, repeat, root)
    if sweep_jobs:
        lines += sweep_section(sweep_jobs, root)
    return lines


if __name__ == "__main__":
    main()
