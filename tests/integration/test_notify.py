"""Notifications against real receivers: a command run as a real process, and an HTTP server
on loopback. Each notifier must get the event, and none may hold up or break anything when it
fails or hangs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ccd import logs
from ccd.engine import Engine
from ccd.engine.notify import Notifier, Occasion, redact
from ccd.spec import parse
from ccd.spec.notify import JOB_FAILED, NotifySpec, from_mapping
from tests.helpers import eventually, pid_alive, wait_for
from tests.integration.daemon_fixture import DaemonProcess

STATUS = {
    "workflow": {"id": "w1", "name": "demo", "state": "failed"},
    "jobs": [
        {"name": "a", "state": "succeeded", "exit_code": 0, "reason": None, "attempts": 1},
        {"name": "b", "state": "failed", "exit_code": 3, "reason": "exit code 3", "attempts": 2},
    ],
}


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST (path, headers, JSON body) and
    answers ``status``; with ``hang``, it reads the request and never answers."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.got = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, dict(self.headers), json.loads(body)))
                receiver.got.set()
                if hang:
                    receiver.release.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def notifier(specs: Sequence[NotifySpec], own: Sequence[NotifySpec] = ()) -> Notifier:
    async def specs_of(_: str) -> Sequence[NotifySpec]:
        return own

    async def status_of(_: str) -> Mapping[str, Any]:
        return STATUS

    return Notifier(specs, specs_of, status_of)


def capture_script(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    """A command that saves its stdin and the CCD_* environment to files in tmp_path."""
    out = tmp_path / "got"
    script = tmp_path / "capture.sh"
    script.write_text(f"cat > {out}.json\nenv | grep ^CCD_ | sort > {out}.env\n")
    return ("sh", str(script)), out


async def test_a_command_gets_the_event_on_stdin_and_in_its_environment(tmp_path: Path) -> None:
    argv, out = capture_script(tmp_path)
    n = notifier([NotifySpec(command=argv, events=frozenset({JOB_FAILED}))])
    n.tell(Occasion("w1", JOB_FAILED, "b", at=123.0))
    await n.close()
    event = json.loads(out.with_suffix(".json").read_text())
    assert event["event"] == "job_failed"
    assert event["workflow"] == STATUS["workflow"]
    assert event["job"]["name"] == "b" and event["job"]["reason"] == "exit code 3"
    assert event["counts"] == {"succeeded": 1, "failed": 1}
    assert event["failed_jobs"] == ["b"]
    env = out.with_suffix(".env").read_text().splitlines()
    assert "CCD_EVENT=job_failed" in env
    assert "CCD_JOB=b" in env and "CCD_WORKFLOW=w1" in env and "CCD_STATE=failed" in env
    assert n.sent == 1 and n.failed == 0


async def test_a_url_gets_the_event_as_json_and_the_secret_stays_out_of_the_log(
    tmp_path: Path, receiver: Receiver
) -> None:
    log_file = tmp_path / "ccd.log"
    logs.configure(log_file)
    secret = "T000/B000/XXXXsecretXXXX"
    url = receiver.url(f"/hooks/{secret}?token=also-secret")
    n = notifier([], own=[NotifySpec(url=url)])
    n.tell(Occasion("w1", "failed"))
    await n.close()
    [(path, headers, event)] = receiver.posts
    assert path == f"/hooks/{secret}?token=also-secret"
    assert headers["Content-Type"] == "application/json"
    assert event["event"] == "workflow_finished" and event["state"] == "failed"
    assert event["job"] is None
    text = log_file.read_text()
    assert "notify_sent" in text
    assert "secret" not in text
    assert n.sent == 1


async def test_only_the_events_asked_for_are_sent(tmp_path: Path, receiver: Receiver) -> None:
    n = notifier([NotifySpec(url=receiver.url("/end"))])  # default: workflow ends only
    n.tell(Occasion("w1", JOB_FAILED, "b"))
    await n.close()
    assert receiver.posts == [] and n.sent == 0


async def test_failing_and_hanging_notifiers_are_bounded_and_logged(tmp_path: Path) -> None:
    log_file = tmp_path / "ccd.log"
    logs.configure(log_file)
    hanging = Receiver(hang=True)
    refusing = Receiver(status=500)
    try:
        specs = [
            NotifySpec(command=("sh", "-c", "sleep 60"), timeout_s=0.5),
            NotifySpec(command=("sh", "-c", "echo boom >&2; exit 4")),
            NotifySpec(command=("/nonexistent/notifier",)),
            NotifySpec(url=hanging.url("/slow/secret-path"), timeout_s=0.5),
            NotifySpec(url=refusing.url("/down")),
            NotifySpec(url="http://127.0.0.1:1/closed-port"),
        ]
        n = notifier(specs)
        started = time.monotonic()
        n.tell(Occasion("w1", "succeeded"))
        await n.close()
        elapsed_s = time.monotonic() - started
    finally:
        hanging.close()
        refusing.close()
    assert n.failed == 6 and n.sent == 0
    assert elapsed_s < 30  # the 60 s sleep was killed, the silent server given up on
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    failures = [line for line in lines if line["event"] == "notify_failed"]
    assert len(failures) == 6
    assert any(f.get("stderr") == "boom" and f.get("returncode") == 4 for f in failures)
    assert any("killed" in f.get("error", "") for f in failures)
    assert any(f.get("http_status") == 500 for f in failures)
    assert "secret-path" not in log_file.read_text()


async def test_a_hanging_command_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    command = ("sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait")
    n = notifier([NotifySpec(command=command, timeout_s=0.5)])
    n.tell(Occasion("w1", "failed"))
    await n.close()
    child = int(pid_file.read_text())
    await eventually(lambda: not pid_alive(child), "the command's child to be killed")


def test_specs_are_checked_field_by_field() -> None:
    assert from_mapping({"command": "notify-send done"}) == NotifySpec(
        command=("sh", "-c", "notify-send done")
    )
    spec = from_mapping(
        {"url": "https://x.example/h", "events": ["failed", JOB_FAILED], "timeout": 3}
    )
    assert spec == NotifySpec(
        url="https://x.example/h", events=frozenset({"failed", JOB_FAILED}), timeout_s=3.0
    )
    assert from_mapping({}) == ["give a 'command', a 'url', or both"]
    assert from_mapping({"url": "ftp://x"}) == ["field 'url': expected an http:// or https:// URL"]
    assert from_mapping({"command": "x", "events": ["done"], "bogus": 1}) == [
        "unknown field 'bogus'",
        "field 'events': unknown event 'done' (use succeeded, failed, cancelled, job_failed)",
    ]
    assert from_mapping({"command": "x", "timeout": "soon"}) == [
        "field 'timeout': expected a number of seconds > 0, got 'soon'"
    ]


def test_redact_keeps_only_scheme_host_and_port() -> None:
    assert redact("https://user:pw@hooks.example.org/services/T0/B0/abc?x=1") == (
        "https://hooks.example.org/..."
    )
    assert redact("http://127.0.0.1:8080/p") == "http://127.0.0.1:8080/..."


# --- end to end: a workflow file's notifiers under `ccctl run`, the daemon config's --------


def ccctl_run(workflow: Path, state: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cli", "run", str(workflow), "--state-dir", str(state)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_ccctl_run_tells_the_workflows_notifiers_of_a_failure_and_the_end(
    tmp_path: Path, receiver: Receiver
) -> None:
    got = tmp_path / "events.jsonl"
    url = receiver.url("/hook/T0/B0/topsecret")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(
        textwrap.dedent(
            f"""
            notify:
              - command: "cat >> {got}; echo >> {got}"
                events: [failed, job_failed]
              - url: {url}
                events: [succeeded, failed, job_failed]
                timeout: 5s
            jobs:
              a: {{run: "exit 3"}}
              b: {{run: "true"}}
            """
        )
    )
    result = ccctl_run(workflow, tmp_path / "state")
    assert result.returncode == 1, result.stderr
    told = [json.loads(line) for line in got.read_text().splitlines()]
    assert [(e["event"], e["state"]) for e in told] == [
        ("job_failed", "failed"),
        ("workflow_finished", "failed"),
    ]
    assert told[0]["job"]["name"] == "a" and told[0]["job"]["exit_code"] == 3
    assert told[1]["counts"] == {"failed": 1, "succeeded": 1}
    posted = sorted((event["event"], path) for path, _, event in receiver.posts)
    assert posted == [
        ("job_failed", "/hook/T0/B0/topsecret"),
        ("workflow_finished", "/hook/T0/B0/topsecret"),
    ]
    log = (tmp_path / "state" / "ccd.log").read_text()
    assert log.count('"notify_sent"') == 4 and "topsecret" not in log


def test_a_hanging_notifier_holds_up_neither_the_workflow_nor_the_run(tmp_path: Path) -> None:
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(
        'notify: {command: "sleep 60", events: [succeeded], timeout: 1}\n'
        'jobs:\n  a: {run: "true"}\n'
    )
    started = time.monotonic()
    result = ccctl_run(workflow, tmp_path / "state")
    assert result.returncode == 0, result.stderr  # the workflow succeeded all the same
    assert time.monotonic() - started < 30
    log = (tmp_path / "state" / "ccd.log").read_text()
    assert '"notify_failed"' in log and "killed" in log


def test_the_daemons_notifiers_hear_of_every_workflow(tmp_path: Path, receiver: Receiver) -> None:
    config = tmp_path / "ccd.yaml"
    config.write_text(f"notify: {{url: '{receiver.url('/all')}', events: [succeeded]}}\n")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text('jobs:\n  a: {run: "true"}\n')
    daemon = DaemonProcess(tmp_path, config).start()
    try:
        wf_id = daemon.client.submit(workflow)
        assert daemon.client.wait(wf_id)["workflow"]["state"] == "succeeded"
        wait_for(lambda: bool(receiver.posts), what="the daemon's notification")
    finally:
        daemon.stop()
    [(path, _, event)] = receiver.posts
    assert path == "/all" and event["workflow"]["id"] == wf_id
    assert event["state"] == "succeeded"


async def test_a_workflows_notifiers_survive_export(tmp_path: Path) -> None:
    text = (
        "notify:\n"
        "  - {command: 'echo done', events: [failed, job_failed], timeout: 30s}\n"
        "  - {url: 'https://hooks.example.org/x'}\n"
        "jobs:\n  a: {run: 'true'}\n"
    )
    spec = parse(text, source=tmp_path / "wf.yaml", base_dir=tmp_path)
    engine = await Engine.open(tmp_path / "state", spec.hosts)
    try:
        wf_id = await engine.submit(spec)
        await engine.wait(wf_id)
        exported = await engine.export_yaml(wf_id)
    finally:
        await engine.close()
    again = parse(exported, source=tmp_path / "again.yaml", base_dir=tmp_path)
    assert again.notify == spec.notify
