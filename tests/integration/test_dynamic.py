"""Dynamic workflows on local jobs: outputs, matrix sweeps (decided at submit or at run
time), jobs added while a workflow runs (by a request or by a job), and export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ccd.engine import Engine, JobEvent
from ccd.errors import Conflict, SpecError
from ccd.spec import load
from tests.conftest import load_text, run_spec
from tests.helpers import eventually

HOSTILE = "a  b * $(touch PWNED) `touch PWNED` ' \" ;|& $HOME"


async def _log(engine: Engine, wf_id: str, job: str) -> str:
    return (await engine.read_log(wf_id, job, None, 0))[1].decode()


# --- outputs -----------------------------------------------------------------------------


async def test_outputs_reach_children_in_run_args_and_env(
    write_workflow, engine_for, tmp_path: Path
) -> None:
    (tmp_path / "value.txt").write_text(HOSTILE)
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          make:
            run: |
              echo "plain=1.5" >> "$CCD_OUTPUTS"
              printf 'hostile=%s\\n' "$(cat {tmp_path}/value.txt)" >> "$CCD_OUTPUTS"
          use:
            needs: [make]
            run: printf '[%s] [%s] [%s]\\n' ${{{{ jobs.make.outputs.hostile }}}} "$V" "$1"
            args: ["${{{{ jobs.make.outputs.plain }}}}"]
            env: {{V: "x=${{{{ jobs.make.outputs.plain }}}}"}}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs[""]["state"] == "succeeded", jobs
    assert jobs["make"]["outputs"] == {"plain": "1.5", "hostile": HOSTILE}
    assert jobs["use"]["outputs"] == {}
    assert await _log(engine, jobs[""]["id"], "use") == f"[{HOSTILE}] [x=1.5] [1.5]\n"
    assert not list(tmp_path.rglob("PWNED"))  # no value was ever run as shell text


async def test_a_missing_output_fails_the_child_with_the_reason(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          make: {run: 'echo accuracy=0.9 >> "$CCD_OUTPUTS"'}
          use: {needs: [make], run: 'echo ${{ jobs.make.outputs.acuracy }}'}
          after: {needs: [use], run: 'true'}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["use"]["state"] == "failed" and jobs["use"]["attempts"] == 0
    assert "wrote no output 'acuracy' (did you mean 'accuracy'?)" in jobs["use"]["reason"]
    assert jobs["after"]["state"] == "skipped"


@pytest.mark.parametrize(
    ("writer", "reason"),
    [
        ("printf 'a=1\\0\\1\\2' > \"$CCD_OUTPUTS\"", "binary"),
        ("head -c 1100000 /dev/zero | tr '\\0' x > \"$CCD_OUTPUTS\"", "over the limit"),
        ("echo 'no equals sign' > \"$CCD_OUTPUTS\"", "line 1: no '='"),
    ],
)
async def test_a_bad_outputs_file_fails_its_writer(
    write_workflow, engine_for, writer: str, reason: str
) -> None:
    spec = load_text(write_workflow, f"jobs:\n  w:\n    run: {json.dumps(writer)}\n")
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["w"]["state"] == "failed" and reason in jobs["w"]["reason"], jobs["w"]
    assert jobs["w"]["outputs"] == {}


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("{needs: [a], run: 'echo ${{ jobs.b.outputs.k }}'}", "'b' is not a parent of 'c'"),
        ("{needs: [a], run: 'echo ${{ jobs.aa.outputs.k }}'}", "unknown job 'aa' (did you"),
        ("{needs: [a], args: ['${{ matrix.k }}'], run: x}", "only a job with a matrix"),
        ("{needs: [a], env: {X: '${{ jobs.a.k }}'}, run: x}", "cannot read"),
        ("{needs: [a], run: 'echo ${{ jobs.a.outputs.k'}", "unclosed"),
    ],
)
def test_bad_references_are_refused_at_submit(write_workflow, job: str, message: str) -> None:
    path = write_workflow(f"jobs:\n  a: {{run: x}}\n  b: {{run: x}}\n  c: {job}\n")
    with pytest.raises(SpecError) as err:
        load(path)
    [problem] = err.value.problems
    assert problem.job == "c" and problem.line == 4 and message in problem.message, problem


# --- matrix sweeps -----------------------------------------------------------------------


async def test_matrix_expands_runs_each_and_fans_in(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          train:
            matrix: {lr: [0.1, 0.01], seed: [1, 2, 3], exclude: [{lr: 0.01, seed: 3}]}
            run: echo "score=${{ matrix.lr }}-${{ matrix.seed }}" >> "$CCD_OUTPUTS"
          pick:
            needs: [train]
            run: echo '${{ jobs.train.outputs.score }}'
    """,
    )
    assert "train.lr-0.1.seed-1" in spec.jobs and len(spec.jobs) == 7  # 5 members, group, pick
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs[""]["state"] == "succeeded", jobs
    assert jobs["train.lr-0.01.seed-2"]["outputs"] == {"score": "0.01-2"}
    scores = json.loads(await _log(engine, jobs[""]["id"], "pick"))
    assert scores == ["0.1-1", "0.1-2", "0.1-3", "0.01-1", "0.01-2"]
    assert jobs["train"]["attempts"] == 0 and jobs["train"]["state"] == "succeeded"


async def test_a_failed_member_skips_the_fan_in(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          t: {matrix: {n: [0, 1]}, run: 'exit ${{ matrix.n }}'}
          after: {needs: [t], run: 'true'}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert (jobs["t.n-0"]["state"], jobs["t.n-1"]["state"]) == ("succeeded", "failed")
    assert jobs["t"]["state"] == "skipped" and jobs["after"]["state"] == "skipped"


def test_a_matrix_of_100k_combinations_is_refused(write_workflow) -> None:
    path = write_workflow(
        "jobs:\n  t:\n    run: x\n    matrix:\n"
        f"      a: {list(range(1000))}\n      b: {list(range(100))}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        f"{path}:5: job 't': field 'matrix': 100,000 combinations, more than the limit of "
        "10,000 jobs per matrix" in done.stderr
    )


async def test_a_runtime_sweep_expands_from_a_parent_output(
    write_workflow, engine_for, tmp_path: Path
) -> None:
    ran = tmp_path / "ran.txt"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          split: {{run: 'echo chunks=[\\"a b\\", \\"c\\", 3] >> "$CCD_OUTPUTS"'}}
          work:
            needs: [split]
            matrix: {{chunk: "${{{{ jobs.split.outputs.chunks }}}}"}}
            run: |
              echo "${{{{ matrix.chunk }}}}" >> {ran}
              echo "n=$CCD_MATRIX_chunk" >> "$CCD_OUTPUTS"
          total: {{needs: [work], run: 'echo ${{{{ jobs.work.outputs.n }}}}'}}
    """,
    )
    assert set(spec.jobs) == {"split", "work", "total"}
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs[""]["state"] == "succeeded", jobs
    assert sorted(ran.read_text().splitlines()) == ["3", "a b", "c"]
    assert [n for n in jobs if n.startswith("work.")] == [
        "work.chunk-a_b",
        "work.chunk-c",
        "work.chunk-3",
    ]
    assert json.loads(await _log(engine, jobs[""]["id"], "total")) == ["a b", "c", "3"]
    edges = await engine.store.list_edges(jobs[""]["id"])
    assert ("split", "work.chunk-c") in edges and ("work.chunk-c", "work") in edges


async def test_a_runtime_sweep_of_no_list_fails_the_group(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          split: {run: 'echo chunks=oops >> "$CCD_OUTPUTS"'}
          work: {needs: [split], matrix: {c: "${{ jobs.split.outputs.chunks }}"}, run: 'true'}
          after: {needs: [work], run: 'true'}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["work"]["state"] == "failed" and "not a JSON list" in jobs["work"]["reason"]
    assert jobs["after"]["state"] == "skipped"


# --- jobs added at run time --------------------------------------------------------------


async def test_jobs_added_to_a_running_workflow(write_workflow, engine_for, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          ok: {{run: 'echo k=v >> "$CCD_OUTPUTS"'}}
          bad: {{run: 'exit 1', needs: [ok]}}
          slow: {{run: 'while [ ! -e {gate} ]; do sleep 0.02; done', needs: [ok]}}
    """,
    )
    engine: Engine = await engine_for(spec)
    wf_id = await engine.submit(spec)
    await _wait_state(engine, wf_id, "bad", "failed")
    events: list[JobEvent] = []
    engine.subscribe(events.append)
    fragment = """
        jobs:
          more: {needs: [ok], run: 'echo got ${{ jobs.ok.outputs.k }}'}
          after_bad: {needs: [bad], run: 'true'}
          after_more: {needs: [more, slow], run: 'true'}
    """
    added = await engine.add_jobs(wf_id, _dedent(fragment), tmp_path / "more.yaml", tmp_path)
    assert added == {"added": ["more", "after_bad", "after_more"], "existing": []}
    told = {(e.job, e.state, e.reason) for e in events}  # what live views hear, at once
    assert ("after_more", "waiting", "added by request") in told
    assert ("after_bad", "skipped", "ancestor 'bad' failed") in told
    again = await engine.add_jobs(wf_id, _dedent(fragment), tmp_path / "more.yaml", tmp_path)
    assert again == {"added": [], "existing": ["more", "after_bad", "after_more"]}
    gate.touch()
    await engine.wait(wf_id)
    jobs = {j.name: j for j in (await engine.status(wf_id)).jobs}
    assert jobs["more"].state == "succeeded" and jobs["after_more"].state == "succeeded"
    assert jobs["after_bad"].state == "skipped"
    assert await _log(engine, wf_id, "more") == "got v\n"


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ("jobs:\n  x: {needs: [y], run: 'true'}\n  y: {needs: [x], run: 'true'}\n", "cycle"),
        ("jobs:\n  x: {needs: [nope], run: 'true'}\n", "unknown parent 'nope'"),
        ("jobs:\n  x: {needs: [a], run: 'echo ${{ jobs.b.outputs.k }}'}\n", "not a parent"),
    ],
)
async def test_a_bad_fragment_is_refused_whole(
    write_workflow, engine_for, tmp_path: Path, fragment: str, message: str
) -> None:
    spec = load_text(write_workflow, "jobs:\n  a: {run: 'true'}\n  b: {run: 'true'}\n")
    engine: Engine = await engine_for(spec)
    wf_id = await engine.submit(spec)
    await engine.wait(wf_id)
    with pytest.raises(SpecError, match=message):
        await engine.add_jobs(wf_id, fragment, tmp_path / "frag.yaml", tmp_path)
    assert [j.name for j in (await engine.status(wf_id)).jobs] == ["a", "b"]


async def test_a_clashing_job_name_is_a_conflict(write_workflow, engine_for, tmp_path) -> None:
    spec = load_text(write_workflow, "jobs:\n  a: {run: 'true'}\n")
    engine: Engine = await engine_for(spec)
    wf_id = await engine.submit(spec)
    await engine.wait(wf_id)
    with pytest.raises(Conflict, match="'a' already exists"):
        await engine.add_jobs(wf_id, "jobs:\n  a: {run: 'false'}\n", tmp_path / "f.yaml", tmp_path)
    # the finished workflow was read back to check the request, and is not kept in memory
    await eventually(lambda: engine.live_run(wf_id) is None, "the workflow to be dropped again")


async def test_adding_to_a_finished_workflow_runs_it_again(write_workflow, engine_for, tmp_path):
    spec = load_text(write_workflow, "jobs:\n  a: {run: 'echo k=1 >> \"$CCD_OUTPUTS\"'}\n")
    engine: Engine = await engine_for(spec)
    wf_id = await engine.submit(spec)
    assert await engine.wait(wf_id) == "succeeded"
    await engine.add_jobs(
        wf_id,
        "jobs:\n  b: {needs: [a], run: 'exit ${{ jobs.a.outputs.k }}'}\n",
        tmp_path / "f.yaml",
        tmp_path,
    )
    assert await engine.wait(wf_id) == "failed"


LATER = "jobs:\n  later: {needs: [plan], run: 'echo later ${{ jobs.plan.outputs.n }}'}\n"


async def test_a_job_adds_jobs_through_ccd_new_jobs(write_workflow, engine_for) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          plan:
            inputs: [later.yaml]
            run: |
              echo n=3 >> "$CCD_OUTPUTS"
              cp later.yaml "$CCD_NEW_JOBS"
          bad_plan:
            run: |
              echo 'jobs: {x: {needs: [nothing], run: y}}' > "$CCD_NEW_JOBS"
    """,
        **{"later.yaml": LATER},
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    assert jobs["plan"]["state"] == "succeeded" and jobs["later"]["state"] == "succeeded"
    assert await _log(engine, jobs[""]["id"], "later") == "later 3\n"
    assert jobs["bad_plan"]["state"] == "failed"
    assert "$CCD_NEW_JOBS" in jobs["bad_plan"]["reason"]
    assert "unknown parent 'nothing'" in jobs["bad_plan"]["reason"]


# --- export ------------------------------------------------------------------------------


async def test_export_rebuilds_the_same_dag_with_its_state(
    write_workflow, engine_for, tmp_path: Path
) -> None:
    spec = load_text(
        write_workflow,
        """
        jobs:
          split: {run: 'echo "c=[1, 2]" >> "$CCD_OUTPUTS"'}
          work: {needs: [split], matrix: {x: "${{ jobs.split.outputs.c }}"}, run: 'true'}
          sum: {needs: [work], run: 'true', retries: 1, timeout: 1m}
    """,
    )
    engine: Engine = await engine_for(spec)
    jobs = await run_spec(engine, spec)
    wf_id = jobs[""]["id"]
    await engine.add_jobs(
        wf_id, "jobs:\n  extra: {needs: [sum], run: 'true'}\n", tmp_path / "f.yaml", tmp_path
    )
    await engine.wait(wf_id)
    text = await engine.export_yaml(wf_id)
    path = tmp_path / "exported.yaml"
    path.write_text(text)
    again = load(path)
    status = await engine.status(wf_id)
    assert set(again.jobs) == {j.name for j in status.jobs}
    assert sorted(again.edges()) == sorted(await engine.store.list_edges(wf_id))
    data = await engine.export_json(wf_id)
    by_name = {j["name"]: j for j in data["jobs"]}
    assert by_name["split"]["outputs"] == {"c": "[1, 2]"}
    assert by_name["work.x-2"]["state"] == "succeeded"
    assert by_name["work.x-2"]["attempts"][0]["exit_code"] == 0
    assert yaml.safe_load(text)["jobs"]["work"]["matrix"] == {"include": [{"x": "1"}, {"x": "2"}]}


async def _wait_state(engine: Engine, wf_id: str, job: str, state: str) -> None:
    async def reached() -> bool:
        return {j.name: j.state for j in (await engine.status(wf_id)).jobs}.get(job) == state

    await eventually(reached, f"{job} to be {state}")


def _dedent(text: str) -> str:
    return textwrap.dedent(text)


def test_dry_run_says_a_group_runs_nothing(write_workflow, tmp_path: Path) -> None:
    path = write_workflow(
        "jobs:\n  p: {run: 'true'}\n"
        "  t: {needs: [p], matrix: {n: [1, 2]}, run: 'echo ${{ matrix.n }}'}\n"
        "  r: {needs: [p], matrix: {n: '${{ jobs.p.outputs.n }}'}, run: 'true'}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli", "run", str(path), "--dry-run", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "== t.n-2 (host local)\n$ sh -c 'echo \"${CCD_MATRIX_n}\"' sh\n" in done.stdout
    assert "== t (host local)\n$ (none)\n-- a matrix group: runs nothing" in done.stdout
    assert "-- a matrix decided at run time" in done.stdout
