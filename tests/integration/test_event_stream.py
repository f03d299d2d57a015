"""Event streams with ids from the events table: a client that reconnects with
Last-Event-ID (or ``after``) gets exactly what it missed, across a daemon restart too; and
the dashboard's pages answer over the same socket."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccd.engine.store import MIGRATIONS, Store
from tests.helpers import wait_for
from tests.integration.daemon_fixture import DaemonProcess, Sse, read_events

TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    config = tmp_path / "ccd.yaml"
    config.write_text("limits: {progress_interval_s: 0.05}\n")
    d = DaemonProcess(tmp_path, config).start()
    yield d
    d.stop()


def submit(daemon: DaemonProcess, text: str, name: str = "wf.yaml") -> str:
    path = daemon.root / name
    path.write_text(text)
    return daemon.client.submit(path)


def finished(events: list[Sse]) -> bool:
    return any(e.data["job"] is None and e.data["state"] in TERMINAL for e in events)


def stored_ids(daemon: DaemonProcess, workflow: str) -> list[tuple[int, str | None, str]]:
    with sqlite3.connect(daemon.state_dir / "ccd.db") as db:
        rows = db.execute(
            "SELECT id, job, new FROM events WHERE workflow_id=? ORDER BY id", (workflow,)
        )
        return [(int(i), job, new) for i, job, new in rows]


PROGRESSING = """
name: ids
jobs:
  a: {run: 'echo "# ccd progress=50 half"; sleep 0.3; echo "# ccd progress=90"; sleep 0.3'}
  b: {needs: [a], run: 'true'}
  c: {needs: [a], run: 'exit 3'}
"""


def test_each_stored_change_carries_its_events_table_id(daemon: DaemonProcess) -> None:
    wf = submit(daemon, PROGRESSING)
    events = read_events(daemon.socket, f"/events?workflow={wf}&after=0", finished)
    stored = [e for e in events if e.id is not None]
    assert [(int(e.id), e.data["job"], e.data["state"]) for e in stored] == stored_ids(daemon, wf)  # type: ignore[arg-type]
    assert all(e.data["id"] == int(e.id) for e in stored)  # type: ignore[arg-type]
    # The JSON of before, plus ids: a change has progress None; a progress update has none.
    assert all(e.data["progress"] is None and "old" in e.data for e in stored)
    progress = [e.data for e in events if e.id is None]
    assert progress and all(p["job"] == "a" and p["progress"] in (50, 90) for p in progress)
    failed = next(e.data for e in stored if e.data["job"] == "c" and e.data["state"] == "failed")
    assert failed["now"]["exit_code"] == 3 and failed["now"]["attempts"] == 1


def test_a_client_that_reconnects_gets_exactly_what_it_missed(daemon: DaemonProcess) -> None:
    wf = submit(daemon, PROGRESSING)
    everything = [e for e in read_events(daemon.socket, "/events?after=0", finished) if e.id]
    for cut in (1, len(everything) // 2, len(everything) - 2):
        last = everything[cut - 1].id
        for how in ({"headers": {"Last-Event-ID": last}}, {}):
            query = "" if how else f"&after={last}"
            resumed = read_events(
                daemon.socket,
                f"/events?workflow={wf}{query}",
                finished,
                **how,  # type: ignore[arg-type]
            )
            assert [e.id for e in resumed if e.id] == [e.id for e in everything[cut:]]


def test_a_fresh_stream_opens_with_the_state_and_the_id_it_is_current_to(
    daemon: DaemonProcess,
) -> None:
    wf = submit(daemon, "name: one\njobs:\n  a: {run: 'true'}\n")
    wait_for(lambda: daemon.client.status(wf)["workflow"]["state"] == "succeeded")
    (opening,) = read_events(daemon.socket, f"/events?workflow={wf}", lambda e: len(e) == 1)
    assert opening.data == {"workflow": wf, "job": None, "state": "succeeded"}
    assert int(opening.id or 0) == stored_ids(daemon, wf)[-1][0]


def test_a_stream_resumes_after_a_daemon_restart_with_what_happened_meanwhile(
    daemon: DaemonProcess,
) -> None:
    gate, started = daemon.root / "gate", daemon.root / "started"
    wf = submit(
        daemon,
        f"name: restart\njobs:\n  a: {{run: 'touch {started}; while [ ! -e {gate} ]; do sleep"
        " 0.05; done'}\n  b: {needs: [a], run: 'true'}\n",
    )

    def a_running(events: list[Sse]) -> bool:
        return any(e.data["job"] == "a" and e.data["state"] == "running" for e in events)

    seen = read_events(daemon.socket, f"/events?workflow={wf}&after=0", a_running)
    wait_for(started.exists, what="the job to start")  # committed as running is not started
    daemon.stop()
    gate.touch()  # a ends while no daemon watches it
    daemon.start()
    missed = read_events(
        daemon.socket,
        f"/events?workflow={wf}",
        finished,
        headers={"Last-Event-ID": seen[-1].id or ""},
    )
    assert [(e.data["job"], e.data["state"]) for e in missed if e.id] == [
        ("a", "succeeded"), ("b", "ready"), ("b", "running"), ("b", "succeeded"),
        (None, "succeeded"),
    ]  # fmt: skip


def test_event_ids_are_never_given_twice(daemon: DaemonProcess) -> None:
    first = submit(daemon, "name: one\njobs:\n  a: {run: 'true'}\n")
    newest = submit(daemon, "name: two\njobs:\n  a: {run: 'true'}\n")
    for wf in (first, newest):
        wait_for(lambda wf=wf: daemon.client.status(wf)["workflow"]["state"] == "succeeded")
    top = stored_ids(daemon, newest)[-1][0]
    daemon.client.delete(newest)  # its events, the newest ones, go with it
    third = submit(daemon, "name: three\njobs:\n  a: {run: 'true'}\n")
    assert stored_ids(daemon, third)[0][0] > top


async def test_the_migration_keeps_every_event_and_its_id(tmp_path: Path) -> None:
    path = tmp_path / "ccd.db"
    with sqlite3.connect(path) as db:  # a database of schema version 2
        db.executescript(";".join(MIGRATIONS[:2]) + ";PRAGMA user_version=2;")
        db.execute("INSERT INTO workflows VALUES ('w','n','s','b','succeeded',0,NULL,1,2)")
        db.executemany(
            "INSERT INTO events (id, workflow_id, job, at, new) VALUES (?, 'w', NULL, 1, ?)",
            [(5, "running"), (9, "succeeded")],
        )
    store = await Store.open(path)
    try:
        assert [(e.id, e.new) for e in await store.list_events()] == [
            (5, "running"),
            (9, "succeeded"),
        ]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO events (workflow_id, at, new) VALUES ('w', 3, 'running')")
        db.execute("DELETE FROM events WHERE id > 9")
        db.execute("INSERT INTO events (workflow_id, at, new) VALUES ('w', 4, 'running')")
        assert [i for (i,) in db.execute("SELECT id FROM events")] == [5, 9, 11]


def test_the_workflows_page_is_newest_first_and_paged(daemon: DaemonProcess) -> None:
    ids = [submit(daemon, f"name: wf{i:02d}\njobs:\n  a: {{run: 'true'}}\n") for i in range(55)]
    status, _, body = daemon.client._request("GET", "/")
    page = body.decode()
    assert status == 200 and "55 in this daemon" in page
    rows = [wf for wf in ids if f'id="wf-{wf}"' in page]
    assert rows == ids[-50:]  # the newest 50
    assert page.index(f'id="wf-{ids[-1]}"') < page.index(f'id="wf-{ids[-2]}"')
    _, _, older = daemon.client._request("GET", "/?page=2")
    assert [wf for wf in ids if f'id="wf-{wf}"' in older.decode()] == ids[:5]


def test_pages_of_what_does_not_exist_are_404s(daemon: DaemonProcess) -> None:
    status, _, body = daemon.client._request("GET", "/w/nosuch")
    assert status == 404 and b"no workflow &#39;nosuch&#39;" in body
    wf = submit(daemon, "name: one\njobs:\n  a: {run: 'true'}\n")
    status, _, body = daemon.client._request("GET", f"/w/{wf}/j/nojob")
    assert status == 404 and b"has no job" in body
    status, _, _ = daemon.client._request("GET", "/static/../ccd.db")
    assert status == 404


def test_a_job_page_stream_sends_the_log_and_resumes_at_its_offset(daemon: DaemonProcess) -> None:
    gate = daemon.root / "gate"
    wf = submit(
        daemon,
        f"name: log\njobs:\n  a: {{run: 'echo one; while [ ! -e {gate} ]; do sleep 0.05; done;"
        " echo two'}\n",
    )

    def text(events: list[Sse]) -> str:
        return "".join(e.data.get("text", "") for e in events if e.kind == "log")

    first = read_events(daemon.socket, f"/web/events/{wf}/a", lambda e: "one" in text(e))
    assert first[0].kind == "job" and first[0].data["job"]["state"] in ("running", "succeeded")
    gate.touch()
    place = first[-1].id or ""
    rest = read_events(
        daemon.socket, f"/web/events/{wf}/a", lambda e: "two" in text(e),
        headers={"Last-Event-ID": place},
    )  # fmt: skip
    assert text(rest) == "two\n"  # from where the first stream stopped: not "one" again
