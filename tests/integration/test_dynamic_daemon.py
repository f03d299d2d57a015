"""Dynamic workflows through the daemon: `ccctl add`, `ccctl export`, outputs in
`ccctl status --json`, the Python builder's submit, and kill -9 at the moments that matter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.integration.daemon_fixture import DaemonProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path).start()
    yield d
    d.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _states(d: DaemonProcess, wf_id: str) -> dict[str, str]:
    return {j["name"]: j["state"] for j in d.client.status(wf_id)["jobs"]}


def test_add_export_and_outputs_through_ccctl(daemon: DaemonProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          a: {{run: 'echo answer=42 >> "$CCD_OUTPUTS"'}}
          hold: {{run: 'while [ ! -e {gate} ]; do sleep 0.02; done'}}
        """,
    )
    wf_id = daemon.ccctl("submit", str(wf), check=True).stdout.strip()
    wait_for(lambda: _states(daemon, wf_id)["a"] == "succeeded", what="a to succeed")
    more = write(tmp_path / "more.yaml", "jobs:\n  b: {needs: [a, hold], run: 'true'}\n")
    added = daemon.ccctl("add", wf_id, str(more))
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added: b"
    cycle = write(
        tmp_path / "cycle.yaml",
        "jobs:\n  x: {needs: [y], run: 'true'}\n  y: {needs: [x], run: 'true'}\n",
    )
    refused = daemon.ccctl("add", wf_id, str(cycle))
    assert refused.returncode == 2 and f"{cycle}:2: job 'x': field 'needs': cycle" in refused.stderr
    gate.touch()
    wait_for(lambda: daemon.client.status(wf_id)["workflow"]["state"] == "succeeded")
    status = json.loads(daemon.ccctl("status", wf_id, "--json", check=True).stdout)
    assert {j["name"]: j["outputs"] for j in status["jobs"]}["a"] == {"answer": "42"}
    exported = daemon.ccctl("export", wf_id, "-o", str(tmp_path / "out.yaml"), check=True)
    assert "wrote" in exported.stdout
    valid = daemon.ccctl("validate", str(tmp_path / "out.yaml"))
    assert valid.stdout.strip() == "ok: 3 jobs, 2 edges", valid.stderr
    as_json = json.loads(daemon.ccctl("export", wf_id, "--format", "json", check=True).stdout)
    assert {j["name"]: j["state"] for j in as_json["jobs"]} == {
        "a": "succeeded",
        "hold": "succeeded",
        "b": "succeeded",
    }


def test_python_builder_submits_to_the_daemon(daemon: DaemonProcess, tmp_path: Path) -> None:
    script = write(
        tmp_path / "build.py",
        f"""
        from ccd.client import Client
        from ccd.workflow import Workflow

        wf = (Workflow("built")
              .job("make", run='echo n=7 >> "$CCD_OUTPUTS"')
              .job("use", needs="make", run="exit ${{{{ jobs.make.outputs.n }}}}"))
        wf_id = wf.submit(socket="{daemon.socket}")
        print(Client({str(daemon.socket)!r}).wait(wf_id)["workflow"]["state"])
        """,
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.stdout.strip() == "failed", done.stderr
    [wf] = daemon.client.list_workflows()
    jobs = {j["name"]: j for j in daemon.client.status(wf["id"])["jobs"]}
    assert jobs["use"]["exit_code"] == 7


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_between_a_parent_success_and_its_sweep_expansion(tmp_path: Path) -> None:
    """The daemon is killed the moment a splitting job finishes (before or after its
    success and the sweep it decides were committed: that is one transaction), three
    times at different delays. Every member runs exactly once."""
    d = DaemonProcess(tmp_path).start()
    try:
        for round_, delay_s in enumerate((0.0, 0.02, 0.1)):
            ran = tmp_path / f"ran{round_}"
            marker = tmp_path / f"split-done{round_}"
            chunks = json.dumps([f"c{i}" for i in range(12)])
            wf = write(
                tmp_path / f"wf{round_}.yaml",
                f"""
                jobs:
                  split:
                    run: echo 'chunks={chunks}' >> "$CCD_OUTPUTS" && touch {marker}
                  work:
                    needs: [split]
                    matrix: {{chunk: "${{{{ jobs.split.outputs.chunks }}}}"}}
                    run: echo "$CCD_JOB" >> {ran}
                  all: {{needs: [work], run: 'true'}}
                """,
            )
            wf_id = d.client.submit(wf)
            wait_for(marker.exists, what="the split job to finish")
            time.sleep(delay_s)
            d.kill9()
            d.start()
            state = d.client.wait(wf_id)["workflow"]["state"]
            assert state == "succeeded"
            counts = Counter(ran.read_text().split())
            assert counts == Counter({f"work.chunk-c{i}": 1 for i in range(12)})
            states = _states(d, wf_id)
            assert len(states) == 15 and set(states.values()) == {"succeeded"}
    finally:
        d.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_while_jobs_are_added(tmp_path: Path) -> None:
    """`ccctl add` and a job's $CCD_NEW_JOBS, each cut short by kill -9: after the restart
    (and the add repeated, as a user whose command failed would), every added job exists
    and runs exactly once."""
    ran = tmp_path / "ran"
    gate = tmp_path / "gate"
    marker = tmp_path / "emitted"
    fragment = "\n".join(
        [
            "jobs:",
            *(f"  add{i}: {{needs: [hold], run: 'echo $CCD_JOB >> {ran}'}}" for i in range(8)),
        ]
    )
    more = write(tmp_path / "more.yaml", fragment + "\n")
    emitted = "jobs:\n" + "".join(
        f"  new{i}: {{needs: [emit], run: 'echo $CCD_JOB >> {ran}'}}\n" for i in range(5)
    )
    (tmp_path / "emitted.yaml").write_text(emitted)
    wf = write(
        tmp_path / "wf.yaml",
        f"""
        jobs:
          hold: {{run: 'while [ ! -e {gate} ]; do sleep 0.02; done'}}
          emit:
            needs: [hold]
            run: cp {tmp_path}/emitted.yaml "$CCD_NEW_JOBS" && touch {marker}
        """,
    )
    d = DaemonProcess(tmp_path).start()
    try:
        wf_id = d.client.submit(wf)
        adding = d.ccctl_popen("add", wf_id, str(more))
        time.sleep(0.05)  # the request is on its way, or done
        d.kill9()
        adding.communicate(timeout=60)
        d.start()
        again = d.ccctl("add", wf_id, str(more))
        assert again.returncode == 0, again.stderr
        gate.touch()
        wait_for(marker.exists, what="the emitting job to finish")
        d.kill9()
        d.start()
        assert d.client.wait(wf_id)["workflow"]["state"] == "succeeded"
        counts = Counter(ran.read_text().split())
        expected = [f"add{i}" for i in range(8)] + [f"new{i}" for i in range(5)]
        assert counts == Counter(dict.fromkeys(expected, 1))
    finally:
        d.stop()
