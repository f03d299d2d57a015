"""ccctl validate / run / graph, end to end through the real engine."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "configs" / "examples").glob("*.yaml"))
CLOUDMESH = sorted((REPO / "tests" / "data" / "cloudmesh").glob("*/*.yaml"))
CLOUDMESH_BIN = REPO / "tests" / "data" / "cloudmesh-bin"


def ccctl(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_validate_ok(write_workflow) -> None:
    path = write_workflow("""
        jobs:
          a: {run: 'true'}
          b: {run: 'true', needs: [a]}
          c: {run: 'true', needs: [a, b]}
    """)
    assert ccctl("validate", path) == (0, "ok: 3 jobs, 3 edges\n", "")


def test_validate_reports_every_problem_with_file_and_line(write_workflow) -> None:
    path = write_workflow("""
        jobs:
          a: {run: 'true', neds: [b]}
          b: {run: 'true', needs: [nope], timeout: soon}
    """)
    code, out, err = ccctl("validate", path)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}:") for line in lines)
    assert any("'neds'" in line and "needs" in line for line in lines)
    assert any("nope" in line for line in lines)
    assert any("timeout" in line for line in lines)


def test_run_json_shape_and_exit_code(write_workflow, tmp_path: Path) -> None:
    path = write_workflow("""
        name: shape
        jobs:
          a: {run: 'echo "# ccd progress=50"'}
          b: {run: 'exit 2', needs: [a]}
          c: {run: 'true', needs: [b]}
    """)
    code, out, _ = ccctl("run", path, "--state-dir", tmp_path / "state", "--json")
    assert code == 1
    status = json.loads(out)
    assert set(status["workflow"]) >= {"id", "name", "state"}
    assert status["workflow"]["name"] == "shape" and status["workflow"]["state"] == "failed"
    jobs = {j["name"]: j for j in status["jobs"]}
    for job in jobs.values():
        assert set(job) >= {"name", "state", "exit_code", "attempts", "progress", "host"}
    assert (jobs["a"]["state"], jobs["a"]["progress"], jobs["a"]["host"]) == (
        "succeeded",
        50,
        "local",
    )
    assert (jobs["b"]["state"], jobs["b"]["exit_code"], jobs["b"]["attempts"]) == ("failed", 2, 1)
    assert (jobs["c"]["state"], jobs["c"]["attempts"]) == ("skipped", 0)


def test_run_plain_output_has_events_and_summary(write_workflow, tmp_path: Path) -> None:
    path = write_workflow("jobs:\n  hello: {run: 'echo hi'}\n")
    code, out, _ = ccctl("run", path, "--state-dir", tmp_path / "state")
    assert code == 0
    assert " hello running" in out and " hello succeeded" in out
    assert "JOB" in out and "DURATION" in out
    *_, workflow_line, usage_line = out.rstrip().splitlines()
    assert workflow_line.startswith("workflow ")
    assert usage_line.startswith("used ") and "CPU hours over 1 jobs" in usage_line


def test_invalid_workflow_exits_2_and_writes_nothing(write_workflow, tmp_path: Path) -> None:
    path = write_workflow("jobs:\n  a: {run: 'true', needs: [a]}\n")
    code, _, err = ccctl("run", path, "--state-dir", tmp_path / "state")
    assert code == 2 and "cycle" in err
    assert not (tmp_path / "state").exists()


def test_graph_files_and_state_colours(write_workflow, tmp_path: Path) -> None:
    path = write_workflow("""
        jobs:
          ok: {run: 'true'}
          bad: {run: 'exit 1', needs: [ok]}
    """)
    state = tmp_path / "state"
    assert ccctl("graph", path, "-o", tmp_path / "g.dot", "--state-dir", state)[0] == 0
    assert "#CCFFCC" not in (tmp_path / "g.dot").read_text()
    ccctl("run", path, "--state-dir", state, "--json")
    assert ccctl("graph", path, "-o", tmp_path / "g.dot", "--state-dir", state)[0] == 0
    dot = (tmp_path / "g.dot").read_text()
    assert "#CCFFCC" in dot and "#FFCCCC" in dot
    assert ccctl("graph", path, "-o", tmp_path / "g.svg", "--state-dir", state)[0] == 0
    assert "<svg" in (tmp_path / "g.svg").read_text()


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_run(example: Path, tmp_path: Path) -> None:
    code, out, _ = ccctl("run", example, "--state-dir", tmp_path, "--json")
    status = json.loads(out)
    assert code == 0, status
    assert {j["state"] for j in status["jobs"]} == {"succeeded"}


@pytest.mark.parametrize("workflow", CLOUDMESH, ids=[p.parent.name + p.stem for p in CLOUDMESH])
def test_cloudmesh_cc_workflows_run_unchanged(
    workflow: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scripts call `cms progress N` (a stand-in prints what cloudmesh's prints) and
    # import cloudmesh.common (installed by the test extra).
    monkeypatch.setenv("PATH", f"{CLOUDMESH_BIN}{os.pathsep}{os.environ['PATH']}")
    code, out, _ = ccctl("run", workflow, "--state-dir", tmp_path, "--json")
    status = json.loads(out)
    assert code == 0, status
    assert {j["state"] for j in status["jobs"]} == {"succeeded"}
    if workflow.name == "workflow-clean.yaml":  # the .sh -> .py -> .ipynb chain
        progress = {j["name"]: j["progress"] for j in status["jobs"]}
        assert progress["b.sh"] == progress["c.py"] == progress["d.ipynb"] == 100


def _run_in_background(path: Path, state: Path) -> subprocess.Popen[str]:
    """`ccctl run`, as a process to signal and read from while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "run", str(path), "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_ctrl_c_cancels_and_kills_process_groups(write_workflow, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    path = write_workflow(f"jobs:\n  long: {{run: 'echo $$ > {marker}; sleep 300'}}\n")
    state = tmp_path / "state"
    proc = _run_in_background(path, state)
    deadline = time.monotonic() + 20
    while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    job_pid = int(marker.read_text())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "cancelling" in err
    assert "long" in out and "cancelled" in out
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)


def test_ctrl_c_while_submitting_leaves_no_running_workflow(write_workflow, tmp_path: Path) -> None:
    """SIGINT as soon as the database exists, while 20,000 jobs are being stored: the run
    ends, and its workflow is either not stored or stored and cancelled, never left
    "running" with nobody to run it."""
    path = write_workflow("jobs:\n" + "".join(f"  j{i}: {{run: 'true'}}\n" for i in range(20000)))
    state = tmp_path / "state"
    proc = _run_in_background(path, state)
    deadline = time.monotonic() + 30
    while not (state / "ccd.db").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    with sqlite3.connect(state / "ccd.db") as db:
        states = [s for (s,) in db.execute("SELECT state FROM workflows")]
        jobs = {s for (s,) in db.execute("SELECT DISTINCT state FROM jobs")}
    assert states in ([], ["cancelled"]), states
    assert jobs <= {"succeeded", "cancelled"}, jobs


def test_dry_run_shows_commands_and_runs_nothing(write_workflow, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write_workflow(
        f"""
        jobs:
          a: {{run: 'touch {marker}'}}
          b: {{script: b.py, args: ["--n", "2"], needs: [a]}}
          c: {{run: 'touch {marker} && echo $HOME'}}
    """,
        **{"b.py": "print('b')\n"},
    )
    code, out, _ = ccctl("run", path, "--dry-run", "--state-dir", tmp_path / "state")
    assert code == 0
    assert f"== a (host local)\n$ touch {marker}\n" in out  # needs no shell: run without
    assert f"== c (host local)\n$ sh -c 'touch {marker} && echo $HOME' sh" in out
    assert "\n$ python3 ./b.py --n 2" in out
    code, out, _ = ccctl("run", path, "--dry-run", "--json", "--state-dir", tmp_path / "state")
    plans = {plan["job"]: plan for plan in json.loads(out)}
    assert code == 0 and plans["a"]["command"] == f"touch {marker}"
    assert plans["b"]["host"] == "local" and plans["b"]["problems"] == []
    assert not marker.exists() and not (tmp_path / "state" / "ccd.db").exists()


def test_unusable_paths_are_one_line_errors(write_workflow, tmp_path: Path) -> None:
    path = write_workflow("jobs:\n  a: {run: 'true'}\n")
    afile = tmp_path / "afile"
    afile.write_text("")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "ccd.db").write_text("this is no database " * 20)
    cases = [
        (("run", path, "--state-dir", afile / "sub"), f"error: {afile / 'sub'}: Not a directory"),
        (
            ("run", path, "--state-dir", corrupt),
            f"error: {corrupt / 'ccd.db'}: file is not a database",
        ),
        (
            ("graph", path, "-o", tmp_path / "no" / "g.dot"),
            f"error: {tmp_path / 'no' / 'g.dot'}: No such file or directory",
        ),
    ]
    missing = tmp_path / "missing.yaml"
    code, _, err = ccctl("graph", missing, "-o", tmp_path / "g.dot")  # a file, not a daemon's id
    assert (code, err.startswith(f"{missing}: cannot read workflow file")) == (2, True), err
    for args, message in cases:
        code, _, err = ccctl(*args)
        assert (code, err.strip()) == (1, message), args


def test_run_says_when_a_host_it_needs_is_unreachable(write_workflow, tmp_path: Path) -> None:
    """Its jobs wait for the host; without a word that would look like a hang."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nobody listens on
    port = closed.getsockname()[1]
    path = write_workflow(f"""
        hosts:
          lab: {{type: ssh, hostname: 127.0.0.1, port: {port}, connect_timeout_s: 2}}
        jobs:
          here: {{run: 'true'}}
          there: {{host: lab, run: 'true'}}
    """)
    proc = _run_in_background(path, tmp_path / "state")
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first thing it says on stderr
        assert line.startswith(f"host lab: unreachable (ssh host 'lab' (127.0.0.1:{port}):")
        assert line.rstrip().endswith("its jobs wait for it (Ctrl-C stops the run)")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        closed.close()
        proc.kill()
    assert proc.returncode == 1
    assert re.search(r"^there +cancelled ", out, re.MULTILINE), out
