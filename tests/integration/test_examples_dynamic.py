"""The dynamic examples: the Python-built sweep and the digits sweep of cloudmesh-cc's paper,
each run as a user would; and the Python builder's checks, placed in the Python file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccd.errors import SpecError
from ccd.workflow import Workflow

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "configs" / "examples"


def _run(
    *argv: str | Path, state: Path, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CCD_STATE_DIR=str(state))
    return subprocess.run(
        [sys.executable, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env=env,
    )


def test_the_python_sweep_runs_and_round_trips_through_validate(tmp_path: Path) -> None:
    done = _run(EXAMPLES / "sweep.py", state=tmp_path / "state")
    assert done.returncode == 0, done.stderr
    states = json.loads(done.stdout)
    assert len(states) == 9 and set(states.values()) == {"succeeded"}
    assert "square.n-3.factor-100" in states
    text = _run(EXAMPLES / "sweep.py", "--yaml", state=tmp_path / "state").stdout
    (tmp_path / "sweep.yaml").write_text(text)
    valid = _run("-m", "cli", "validate", tmp_path / "sweep.yaml", state=tmp_path / "state")
    assert valid.stdout == "ok: 3 jobs, 2 edges\n", valid.stderr
    again = _run("-m", "cli", "run", tmp_path / "sweep.yaml", "--json", state=tmp_path / "s2")
    assert again.returncode == 0, again.stderr
    status = json.loads(again.stdout)
    assert {j["name"] for j in status["jobs"]} == set(states)


def test_builder_problems_point_at_the_python_lines() -> None:
    wf = Workflow("bad").job("prep", run="true")
    line = sys._getframe().f_lineno + 1
    wf.job("train", needs="prpe", run="echo ${{ jobs.prep.outputs.x }}")
    with pytest.raises(SpecError) as err:
        wf.spec()
    messages = sorted(str(p) for p in err.value.problems)
    assert messages == [
        f"{__file__}:{line}: job 'train': field 'needs': unknown parent 'prpe' "
        "(did you mean 'prep'?)",
        f"{__file__}:{line}: job 'train': field 'run': ${{{{ jobs.prep.outputs.x }}}}: 'prep' "
        "is not a parent of 'train': add it to its needs",
    ]
    with pytest.raises(TypeError, match="unknown field"):
        wf.job("x", command="true")


def test_builder_runs_in_process(tmp_path: Path) -> None:
    status = (
        Workflow("tiny")
        .job("a", run='echo "k=v w" >> "$CCD_OUTPUTS"')
        .job("b", needs="a", args=["${{ jobs.a.outputs.k }}"], run='test "$1" = "v w"')
        .run(state_dir=tmp_path)
    )
    assert status["workflow"]["state"] == "succeeded", status
    assert status["jobs"][0]["outputs"] == {"k": "v w"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_digits_example_trains_picks_and_reports(tmp_path: Path) -> None:
    """The README's first command, less the setup: every model trains, the best is picked
    from the sweep's outputs, and the report draws its confusion matrix."""
    pytest.importorskip("sklearn")
    done = _run(
        "-m",
        "cli",
        "run",
        EXAMPLES / "digits" / "digits.yaml",
        "--json",
        state=tmp_path / "state",
        timeout_s=280,
    )
    status = json.loads(done.stdout)
    assert done.returncode == 0, (status, done.stderr)
    jobs = {j["name"]: j for j in status["jobs"]}
    members = [n for n in jobs if n.startswith("train.")]
    assert len(members) == 8 and all(jobs[n]["progress"] == 100 for n in members)
    accuracies = {n: float(jobs[n]["outputs"]["accuracy"]) for n in members}
    assert min(accuracies.values()) > 0.8
    assert float(jobs["best"]["outputs"]["accuracy"]) == max(accuracies.values())
    assert json.loads(jobs["train"]["outputs"]["accuracy"]) == [
        jobs[n]["outputs"]["accuracy"] for n in members
    ]
    [report] = (tmp_path / "state" / "runs").glob("*/report/1")
    assert (report / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    notebook = json.loads((report / "report.out.ipynb").read_text())
    printed = "".join(
        "".join(o.get("text", "")) for c in notebook["cells"] for o in c.get("outputs", [])
    )
    assert jobs["best"]["outputs"]["label"] in printed
