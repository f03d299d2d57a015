"""Scheduling semantics with real processes and real SQLite (no sleeps to wait for state)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

from ccd.engine import Engine, Limits
from tests.conftest import FAST, load_text, run_spec
from tests.helpers import eventually, pid_alive


async def test_diamond_runs_in_dependency_order(write_workflow, engine_for, tmp_path: Path) -> None:
    out = tmp_path / "order.txt"
    spec = load_text(
        write_workflow,
        f"""
        defaults: {{retries: 0}}
        jobs:
          a: {{run: 'echo a >> {out}'}}
          b: {{run: 'echo b >> {out}', needs: [a]}}
          c: {{run: 'echo c >> {out}', needs: [a]}}
          d: {{run: 'echo d >> {out}', needs: [b, c]}}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs[""]["state"] == "succeeded"
    order = out.read_text().split()
    assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]
    assert all(jobs[n]["state"] == "succeeded" and jobs[n]["exit_code"] == 0 for n in "abcd")


async def test_a_submitted_workflow_reads_back_from_the_store(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        defaults: {retries: 2, timeout: 1m}
        jobs:
          a: {run: 'true', env: {X: '1'}}
          b: {run: 'true', needs: [a], args: [-v], retry_on: [timeout]}
          c: {run: 'true', needs: [b, a], outputs: ['*.out'], on_retry: {time: x2}}
    """,
    )
    engine: Engine = await engine_for(spec, Limits(max_jobs=0))  # nothing runs
    wf_id = await engine.scheduler.submit(spec)
    stored = await engine.scheduler.stored_spec(wf_id)
    assert stored.jobs == {n: dataclasses.replace(j, line=None) for n, j in spec.jobs.items()}
    assert await engine.store.list_edges(wf_id) == sorted(spec.edges())


async def test_every_transition_is_recorded_as_an_event(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          a: {run: 'true'}
          b: {run: 'true', needs: [a]}
    """,
    )
    engine: Engine = await engine_for(spec)
    wf_id = await engine.scheduler.submit(spec)
    await engine.scheduler.wait(wf_id)
    events = [(e.job, e.old, e.new) for e in await engine.store.list_events(wf_id)]
    for job in ("a", "b"):
        assert [(o, n) for j, o, n in events if j == job] == [
            ("waiting", "ready"),
            ("ready", "running"),
            ("running", "succeeded"),
        ]
    assert events[-1] == (None, "running", "succeeded")


async def test_independent_jobs_run_concurrently_up_to_max_jobs(
    write_workflow, engine_for, tmp_path: Path
) -> None:
    # Each job marks itself active, records how many are active, then waits (bounded) until
    # two jobs have started: if jobs did not overlap, the barrier would time out and fail.
    active, started = tmp_path / "active", tmp_path / "started"
    active.mkdir()
    started.mkdir()
    barrier = f"""
        touch {active}/$CCD_JOB {started}/$CCD_JOB
        ls {active} | wc -l >> {tmp_path}/counts
        i=0
        while [ "$(ls {started} | wc -l)" -lt 2 ]; do
          i=$((i+1)); [ $i -gt 1000 ] && exit 9; sleep 0.01
        done
        rm {active}/$CCD_JOB
    """
    spec = load_text(
        write_workflow,
        "hosts: {pool: {type: local, max_jobs: 2}}\njobs:\n"
        + "".join(f"  j{i}: {{script: barrier.sh, host: pool}}\n" for i in range(6)),
        **{"barrier.sh": barrier},
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs[""]["state"] == "succeeded", jobs
    counts = [int(c) for c in (tmp_path / "counts").read_text().split()]
    assert len(counts) == 6 and max(counts) <= 2


async def test_global_limit_caps_all_hosts(write_workflow, engine_for, tmp_path: Path) -> None:
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          a: {{run: 'mkdir {tmp_path}/lock || exit 7; sleep 0.05; rmdir {tmp_path}/lock'}}
          b: {{run: 'mkdir {tmp_path}/lock || exit 7; sleep 0.05; rmdir {tmp_path}/lock'}}
          c: {{run: 'mkdir {tmp_path}/lock || exit 7; sleep 0.05; rmdir {tmp_path}/lock'}}
    """,
    )
    engine: Engine = await engine_for(spec, Limits(max_jobs=1, retry_backoff_s=0.01))
    jobs = await run_spec(engine, spec)
    assert jobs[""]["state"] == "succeeded"


async def test_failure_skips_only_descendants(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          a: {run: 'true'}
          bad: {run: 'exit 3', needs: [a]}
          child: {run: 'true', needs: [bad]}
          grandchild: {run: 'true', needs: [child]}
          other: {run: 'true', needs: [a]}
          other2: {run: 'true', needs: [other]}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["bad"]["state"] == "failed" and jobs["bad"]["exit_code"] == 3
    assert jobs["child"]["state"] == jobs["grandchild"]["state"] == "skipped"
    assert jobs["other"]["state"] == jobs["other2"]["state"] == "succeeded"
    assert jobs[""]["state"] == "failed"


async def test_fail_fast_cancels_the_rest(write_workflow, engine_for, tmp_path: Path) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          bad: {run: 'exit 1'}
          slow: {run: 'sleep 300'}
          after: {run: 'true', needs: [slow]}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec, fail_fast=True)
    assert jobs["bad"]["state"] == "failed"
    assert (jobs["slow"]["state"], jobs["slow"]["reason"]) == (
        "cancelled",
        "fail-fast after 'bad' failed",
    )
    assert jobs["after"]["state"] in ("cancelled", "skipped")


async def test_retries_count_attempts(write_workflow, engine_for, tmp_path: Path) -> None:
    counter = tmp_path / "n"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          flaky:
            retries: 3
            run: 'echo x >> {counter}; [ "$(wc -l < {counter})" -ge 3 ]'
          never:
            retries: 1
            run: 'exit 4'
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert (jobs["flaky"]["state"], jobs["flaky"]["attempts"]) == ("succeeded", 3)
    assert (jobs["never"]["state"], jobs["never"]["attempts"]) == ("failed", 2)
    wf_id = jobs[""]["id"]
    attempts = await engine.store.list_attempts(wf_id, "flaky")
    assert [(a.attempt, a.exit_code) for a in attempts] == [(1, 1), (2, 1), (3, 0)]
    assert all(Path(a.run_dir, "log").exists() for a in attempts)


async def test_timeout_kills_the_whole_process_group(
    write_workflow, engine_for, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          slow:
            timeout: 0.5s
            run: 'sh -c "sleep 300 & echo \\$! > {pidfile}; wait"'
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["slow"]["state"] == "failed"
    assert jobs["slow"]["reason"] == "timeout"
    grandchild = int(pidfile.read_text())
    assert await eventually(lambda: not pid_alive(grandchild)), "grandchild sleep survived"


async def test_timeout_escalates_to_sigkill(write_workflow, engine_for, tmp_path: Path) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          stubborn:
            timeout: 0.3s
            run: "trap '' TERM; while :; do sleep 0.05; done"
    """,
    )
    engine: Engine = await engine_for(spec, Limits(kill_grace_s=0.3))
    jobs = await run_spec(engine, spec)
    assert (jobs["stubborn"]["state"], jobs["stubborn"]["reason"]) == ("failed", "timeout")


async def test_cancel_a_running_job(write_workflow, engine_for, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          long: {{run: 'echo $$ > {marker}; sleep 300'}}
          after: {{run: 'true', needs: [long]}}
          free: {{run: 'true'}}
    """,
    )
    engine: Engine = await engine_for(spec)
    wf_id = await engine.scheduler.submit(spec)
    assert await eventually(lambda: marker.exists() and marker.read_text().strip() != "")
    pid = int(marker.read_text())
    engine.scheduler.cancel(wf_id, ["long"])
    await engine.scheduler.wait(wf_id)
    jobs = {j.name: j for j in (await engine.status(wf_id)).jobs}
    assert jobs["long"].state == "cancelled"
    assert jobs["after"].state == "skipped"
    assert jobs["free"].state == "succeeded"
    assert await eventually(lambda: not pid_alive(pid))


async def test_cancel_whole_workflow(write_workflow, engine_for, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          long: {{run: 'touch {marker}; sleep 300'}}
          after: {{run: 'true', needs: [long]}}
    """,
    )
    engine: Engine = await engine_for(spec)
    wf_id = await engine.scheduler.submit(spec)
    assert await eventually(marker.exists)
    engine.scheduler.cancel(wf_id)
    assert await engine.scheduler.wait(wf_id) == "cancelled"
    jobs = {j.name: j.state for j in (await engine.status(wf_id)).jobs}
    assert jobs == {"long": "cancelled", "after": "cancelled"}


async def test_progress_markers_of_both_formats(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          ccd: {run: 'echo "# ccd progress=30 loading"; echo "# ccd progress=75 training"'}
          cms: {run: 'echo "# cloudmesh status=running progress=60"'}
          lies: {run: 'echo "# ccd progress=100"; exit 1'}
          indented: {run: 'echo "  # ccd progress=50"'}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["ccd"]["progress"] == 75
    assert jobs["cms"]["progress"] == 60
    assert (jobs["lies"]["state"], jobs["lies"]["progress"]) == ("failed", 100)
    assert jobs["indented"]["progress"] is None
    wf = jobs[""]["id"]
    [record] = [j for j in await engine.store.list_jobs(wf) if j.name == "ccd"]
    assert record.message == "training"


async def test_job_environment_and_args(write_workflow, engine_for, tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    spec = load_text(
        write_workflow,
        """
        name: envtest
        jobs:
          show:
            script: show.sh
            args: ["one", "two words"]
            env: {SEED: "42"}
    """,
        **{
            "show.sh": f"""
        echo "$CCD_WORKFLOW $CCD_JOB $CCD_ATTEMPT $SEED $#:$1:$2" > {out}
        test "$(pwd)" = "$CCD_RUN_DIR"
    """
        },
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["show"]["state"] == "succeeded", jobs["show"]
    wf_id, job, attempt, seed, args = out.read_text().split(" ", 4)
    assert (wf_id, job, attempt, seed) == (jobs[""]["id"], "show", "1", "42")
    assert args.strip() == "2:one:two words"


async def test_script_is_snapshotted_at_submit(write_workflow, engine_for, tmp_path: Path) -> None:
    gate, out = tmp_path / "gate", tmp_path / "out"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          first: {{run: 'while [ ! -e {gate} ]; do sleep 0.01; done'}}
          second: {{script: job.sh, needs: [first]}}
    """,
        **{"job.sh": f"echo original > {out}\n"},
    )
    engine: Engine = await engine_for(spec)
    wf_id = await engine.scheduler.submit(spec)
    (tmp_path / "job.sh").write_text(f"echo edited > {out}\n")
    gate.touch()
    await engine.scheduler.wait(wf_id)
    assert out.read_text().strip() == "original"


async def test_a_job_that_cannot_start_fails_cleanly(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          py: {script: missing_interp.py, python: /nonexistent/python}
          after: {run: 'true', needs: [py]}
    """,
        **{"missing_interp.py": "print('hi')\n"},
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["py"]["state"] == "failed"
    assert jobs["after"]["state"] == "skipped"


async def test_ten_thousand_jobs_run_to_completion(write_workflow, engine_for) -> None:
    lines = ["jobs:"]
    for i in range(10_000):
        needs = f", needs: [j{i - 100}]" if i >= 100 else ""
        lines.append(f"  j{i}: {{run: 'true'{needs}}}")
    spec = load_text(write_workflow, "\n".join(lines) + "\n")
    engine: Engine = await engine_for(spec)
    wf_id = await engine.scheduler.submit(spec)
    assert await engine.scheduler.wait(wf_id) == "succeeded"
    states = {j.state for j in await engine.store.list_jobs(wf_id)}
    assert states == {"succeeded"}
    assert (engine.store.path.parent / "runs" / wf_id / "j9999" / "1").is_dir()


async def test_retry_on_limits_which_failures_are_retried(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          exits: {run: 'exit 1', retries: 2}
          hangs: {run: 'sleep 300', retries: 1, timeout: 0.2s}
        """,
    )
    only_timeouts = frozenset({"timeout"})
    jobs = {n: dataclasses.replace(j, retry_on=only_timeouts) for n, j in spec.jobs.items()}
    spec = dataclasses.replace(spec, jobs=jobs)
    engine: Engine = await engine_for(spec)
    result = await run_spec(engine, spec)
    assert (result["exits"]["state"], result["exits"]["attempts"]) == ("failed", 1)
    assert (result["hangs"]["state"], result["hangs"]["attempts"]) == ("failed", 2)
    assert result["hangs"]["reason"] == "timeout"


async def test_a_job_that_ends_while_no_engine_runs_keeps_its_end_time(
    write_workflow, engine_for, tmp_path: Path
) -> None:
    """The next engine learns of the end from the job's status file, and records when the
    job ended, not when it found out."""
    gate = tmp_path / "gate"
    spec = load_text(
        write_workflow, f"jobs:\n  a: {{run: 'while [ ! -e {gate} ]; do sleep 0.02; done'}}\n"
    )
    first: Engine = await engine_for(spec)
    wf_id = await first.scheduler.submit(spec)
    run_dir = tmp_path / "state" / "runs" / wf_id / "a" / "1"
    assert await eventually(lambda: (run_dir / "status").exists())
    await first.close()  # the job runs on, under its shepherd
    gate.touch()
    assert await eventually(lambda: "\nexit " in (run_dir / "status").read_text())
    seen_ended_at = time.time()
    await asyncio.sleep(0.5)  # no engine for a while: downtime to tell the two times apart
    second: Engine = await engine_for(spec)
    await second.scheduler.recover()
    assert await second.scheduler.wait(wf_id) == "succeeded"
    job = (await second.status(wf_id)).jobs[0]
    attempt = (await second.attempts(wf_id, "a"))[0]
    assert job.ended_at is not None and attempt.ended_at is not None
    # The status file's stamps have 10 ms steps (as /proc/uptime), hence the slack.
    assert job.started_at is not None and job.started_at <= job.ended_at < seen_ended_at + 0.05
    assert attempt.ended_at == job.ended_at


async def test_a_job_emptying_its_run_dir_harms_no_other_job(
    write_workflow, engine_for, tmp_path: Path
) -> None:
    """It deletes its own status file (and turns its log into a directory) while another
    job runs: both ends are still learnt, and the other job's is its own."""
    tidied = tmp_path / "tidied"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          other: {{run: 'while [ ! -e {tidied} ]; do sleep 0.02; done; echo other-done'}}
          tidy: {{run: 'rm -f ./*; mkdir log; touch {tidied}'}}
    """,
    )
    engine: Engine = await engine_for(spec)
    result = await run_spec(engine, spec)
    assert {n: (j["state"], j["exit_code"]) for n, j in result.items() if n} == {
        "other": ("succeeded", 0),
        "tidy": ("succeeded", 0),
    }


async def test_an_attempt_that_breaks_inside_ccd_fails_its_job_only(
    write_workflow, engine_for, monkeypatch
) -> None:
    from ccd.executors.local import LocalExecutor

    real_wait = LocalExecutor.wait

    async def wait(self: LocalExecutor, handle):  # type: ignore[no-untyped-def]
        if handle.job == "broken":
            raise RuntimeError("a bug")
        return await real_wait(self, handle)

    monkeypatch.setattr(LocalExecutor, "wait", wait)
    spec = load_text(write_workflow, "jobs:\n  broken: {run: 'true'}\n  fine: {run: 'true'}\n")
    engine: Engine = await engine_for(spec)
    result = await asyncio.wait_for(run_spec(engine, spec), 30)
    assert (result["broken"]["state"], result["fine"]["state"]) == ("failed", "succeeded")
    assert result["broken"]["reason"] == "ccd error: RuntimeError('a bug')"


async def test_the_last_marker_counts_however_much_came_before_it(
    write_workflow, engine_for
) -> None:
    """3 MiB of output between the markers: more than one read of the log takes."""
    job = (
        'python3 -c \'import sys; print("# ccd progress=10"); sys.stdout.write(("x" * 80 + "\\n")'
        ' * 40000); print("# ccd progress=77 end")\''
    )
    spec = load_text(write_workflow, "jobs:\n  a: {run: " + json.dumps(job) + "}\n")
    engine: Engine = await engine_for(spec, dataclasses.replace(FAST, progress_interval_s=60))
    result = await run_spec(engine, spec)
    assert (result["a"]["state"], result["a"]["progress"]) == ("succeeded", 77)


async def test_retry_backoff_past_a_thousand_attempts(write_workflow, engine_for) -> None:
    spec = load_text(write_workflow, "jobs:\n  a: {run: 'false', retries: 1030}\n")
    limits = dataclasses.replace(FAST, retry_backoff_s=1e-9, retry_backoff_max_s=1e-9)
    engine: Engine = await engine_for(spec, limits)
    result = await asyncio.wait_for(run_spec(engine, spec), 120)
    assert (result["a"]["state"], result["a"]["attempts"]) == ("failed", 1031)
