"""The dashboard in Debian's headless Chromium: live graph and table, log tail, actions,
upload errors, big workflows, no graphviz, a daemon restart. Jobs wait on gate files the
test creates, so every change happens while the page watches, never by timing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Served, Web
from tests.helpers import wait_for


def gate(root: Path, name: str) -> str:
    return str(root / f"gate-{name}")


def held(path: str, before: str = "", after: str = "") -> str:
    """Shell text: ``before``, then wait for the file ``path``, then ``after``."""
    return f"{before}; while [ ! -e {path} ]; do sleep 0.05; done; {after}".strip("; ")


def open_gate(path: str) -> None:
    Path(path).touch()


def job_box(web: Web, job: str):  # type: ignore[no-untyped-def]
    return web.page.locator(f'svg.dag a[data-job="{job}"]')


def job_row(web: Web, job: str):  # type: ignore[no-untyped-def]
    return web.page.locator(f'#job-rows tr[data-job="{job}"]')


def test_a_running_job_changes_colour_and_progress_on_the_graph_and_in_the_table(
    web: Web, served: Served
) -> None:
    start, half, end = (gate(served.root, g) for g in ("start", "half", "end"))
    step = held(half, 'echo "# ccd progress=30 loading"', 'echo "# ccd progress=80 writing"')
    wf = served.workflow(
        f"""
name: live
jobs:
  hold: {{run: '{held(start)}'}}
  step:
    needs: [hold]
    run: '{step}; {held(end)}'
  after: {{needs: [step], run: 'true'}}
"""
    )
    web.goto(f"w/{wf}")
    box, row = job_box(web, "step"), job_row(web, "step")
    expect(box).to_have_class(re.compile(r"\bs-waiting\b"))
    expect(web.page.locator("#live")).to_have_text("Live")

    open_gate(start)
    expect(box).to_have_class(re.compile(r"\bs-running\b"))
    expect(box.locator(".status")).to_have_text("running · 30%")
    expect(row.locator(".state")).to_have_text("running")
    expect(row.locator(".pct")).to_have_text("30%")
    expect(row.locator(".msg")).to_have_text("loading")
    web.shot("workflow-running")

    open_gate(half)
    expect(box.locator(".status")).to_have_text("running · 80%")
    expect(row.locator(".msg")).to_have_text("writing")

    open_gate(end)
    expect(job_box(web, "after")).to_have_class(re.compile(r"\bs-succeeded\b"))
    expect(box).to_have_class(re.compile(r"\bs-succeeded\b"))
    expect(row.locator(".exit")).to_have_text("exit 0")
    expect(web.page.locator("#wf-state")).to_have_text("succeeded")
    expect(web.page.locator("#wf-done")).to_have_text("3")
    assert web.not_reloaded()
    live_rows = web.page.locator("#job-rows").inner_text()
    web.shot("workflow-done")
    # What the live page shows is what the server renders afresh (but the ticking durations).
    web.goto(f"w/{wf}")
    strip = re.compile(r"\d+\.\d+s")
    assert strip.sub("", web.page.locator("#job-rows").inner_text()) == strip.sub("", live_rows)


def test_a_job_page_follows_its_log(web: Web, served: Served) -> None:
    more, end = gate(served.root, "more"), gate(served.root, "end")
    wf = served.workflow(
        f"""
name: logs
jobs:
  talk:
    run: '{held(more, "echo first line", "echo second line >&2")}; {held(end)}'
"""
    )
    web.goto(f"w/{wf}/j/talk")
    log = web.page.locator("#log")
    expect(log).to_contain_text("first line")
    expect(log).not_to_contain_text("second line")
    expect(web.page.locator("#job-facts")).to_contain_text("running")
    open_gate(more)
    expect(log).to_contain_text("second line")
    open_gate(end)
    expect(web.page.locator("#job-facts .badge")).to_have_text("succeeded")
    expect(web.page.locator("#attempt-rows")).to_contain_text("exit 0")
    assert web.not_reloaded()
    web.shot("job-log")


def test_the_cancel_button_cancels_the_workflow(web: Web, served: Served) -> None:
    wf = served.workflow(
        f"""
name: cancel-me
jobs:
  forever: {{run: '{held(gate(served.root, "never"))}'}}
  next: {{needs: [forever], run: 'true'}}
"""
    )
    web.goto(f"w/{wf}")
    expect(job_row(web, "forever").locator(".state")).to_have_text("running")
    web.page.get_by_role("button", name="Cancel workflow").click()
    expect(job_row(web, "forever").locator(".state")).to_have_text("cancelled")
    expect(job_row(web, "next").locator(".state")).to_have_text("cancelled")
    expect(web.page.locator("#wf-state")).to_have_text("cancelled")
    expect(web.page.get_by_role("button", name="Cancel workflow")).to_be_disabled()
    assert served.daemon.client.status(wf)["workflow"]["state"] == "cancelled"


def test_delete_asks_first(web: Web, served: Served) -> None:
    wf = served.workflow("name: short\njobs:\n  one: {run: 'true'}\n")
    wait_for(lambda: served.daemon.client.status(wf)["workflow"]["state"] == "succeeded")
    web.goto(f"w/{wf}")
    delete = web.page.get_by_role("button", name="Delete…")
    delete.click()
    dialog = web.page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    web.shot("delete-dialog")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert served.daemon.client.status(wf)["workflow"]["state"] == "succeeded"
    delete.click()
    dialog.get_by_role("button", name="Delete").click()
    web.page.wait_for_url(served.url)
    assert not any(w["id"] == wf for w in served.daemon.client.list_workflows())
    expect(web.page.locator(f"#wf-{wf}")).to_have_count(0)


def test_an_uploaded_workflow_with_errors_shows_ccctl_validate_messages(
    web: Web, served: Served
) -> None:
    bad = served.root / "bad.yaml"
    bad.write_text("name: bad\njobs:\n  a: {run: 'true'}\n  b:\n    needs: [nope]\n    run: x\n")
    validated = subprocess.run(
        [sys.executable, "-m", "cli", "validate", str(bad)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert validated.returncode == 1
    # The same message, naming the file as the browser uploaded it (no path: it has none).
    expected = validated.stderr.strip().replace(str(bad), "bad.yaml")
    assert expected.startswith("bad.yaml:5: job 'b'"), expected
    web.goto("")
    web.page.get_by_label("Workflow file (YAML)").set_input_files(str(bad))
    web.page.get_by_role("button", name="Submit").click()
    problems = web.page.locator(".problems")
    expect(problems).to_contain_text("bad.yaml was not submitted: 1 problem")
    expect(problems.locator("li")).to_have_text(re.compile(re.escape(expected)))
    expect(problems.locator("pre")).to_have_text("5    needs: [nope]")
    web.shot("upload-error")
    assert served.daemon.client.list_workflows() == []

    good = served.root / "good.yaml"
    good.write_text("name: uploaded\njobs:\n  a: {run: 'echo hi'}\n")
    web.page.get_by_label("Workflow file (YAML)").set_input_files(str(good))
    web.page.get_by_role("button", name="Submit").click()
    web.page.wait_for_url(re.compile(r"/w/[0-9a-f]+$"))
    expect(web.page.locator("h1")).to_contain_text("uploaded")


def test_the_workflows_page_shows_a_new_workflow_live(web: Web, served: Served) -> None:
    web.goto("")
    expect(web.page.locator("#live")).to_have_text("Live")
    wf = served.workflow(f"name: arriving\njobs:\n  a: {{run: '{held(gate(served.root, 'a'))}'}}\n")
    row = web.page.locator(f"#wf-{wf}")
    expect(row).to_contain_text("arriving")
    expect(row.locator(".badge")).to_have_text("running")
    open_gate(gate(served.root, "a"))
    expect(row.locator(".badge")).to_have_text("succeeded")
    expect(row.locator(".pct")).to_have_text("100%")
    assert web.not_reloaded()
    web.shot("workflows")


def test_a_big_workflow_is_drawn_as_groups(web: Web, served: Served) -> None:
    count = 400  # over graph.MAX_BOXES: drawn grouped
    jobs = "".join(f"  work-{i:04d}: {{needs: [prep], run: 'true'}}\n" for i in range(count))
    wf = served.workflow(
        f"name: wide\njobs:\n  prep: {{run: '{held(gate(served.root, 'go'))}'}}\n{jobs}"
        f"  merge:\n    needs: [{', '.join(f'work-{i:04d}' for i in range(count))}]\n"
        "    run: 'true'\n"
    )
    web.goto(f"w/{wf}")
    boxes = web.page.locator("svg.dag a.box")
    expect(boxes).to_have_count(3)
    group = web.page.locator("svg.dag a.group", has_text="work-#")
    expect(group.locator(".status")).to_have_text(f"0 of {count:,} done")
    open_gate(gate(served.root, "go"))
    expect(group.locator(".status")).to_have_text(f"{count:,} of {count:,} done", timeout=90_000)
    expect(group).to_have_class(re.compile(r"\bs-succeeded\b"))
    expect(web.page.locator("#wf-state")).to_have_text("succeeded")
    web.shot("workflow-grouped")
    group.click()
    expect(web.page.locator("#jobs h2")).to_have_text("Jobs in work-#")
    expect(web.page.locator("#jobs .pager")).to_contain_text(f"{count:,} jobs")


@pytest.mark.parametrize("served", ["graphviz", "no-graphviz"], indirect=True)
def test_the_graph_is_drawn_with_or_without_graphviz(web: Web, served: Served) -> None:
    wf = served.workflow(
        "name: shape\njobs:\n  a: {run: 'true'}\n  b: {needs: [a], run: 'true'}\n"
        "  c: {needs: [a], run: 'true'}\n  d: {needs: [b, c], run: 'true'}\n"
    )
    web.goto(f"w/{wf}")
    layout = "graphviz" if served.graphviz else "layered"
    expect(web.page.locator("#graph")).to_have_attribute("data-layout", layout)
    expect(web.page.locator("svg.dag a.box")).to_have_count(4)
    expect(web.page.locator("svg.dag .edges path")).to_have_count(4)
    # Left to right: every parent's box starts left of its children's.
    x = {
        job: job_box(web, job).locator(".frame").bounding_box()["x"]  # type: ignore[index]
        for job in "abcd"
    }
    assert x["a"] < x["b"] < x["d"] and x["a"] < x["c"] < x["d"]
    expect(job_box(web, "d")).to_have_class(re.compile(r"\bs-succeeded\b"))
    web.shot(f"graph-{layout}")


def test_the_page_survives_a_daemon_restart_without_a_reload(web: Web, served: Served) -> None:
    go, end, started = (gate(served.root, g) for g in ("go", "end", "started"))
    wf = served.workflow(
        f"name: restart\njobs:\n  long: {{run: '{held(go, f'touch {started}', held(end))}'}}\n"
        "  last: {needs: [long], run: 'true'}\n"
    )
    web.goto(f"w/{wf}")
    expect(job_row(web, "long").locator(".state")).to_have_text("running")
    wait_for(Path(started).exists, what="the job to start")  # running is committed first
    served.daemon.stop()  # jobs keep running without it
    expect(web.page.locator("#live")).to_have_text("Reconnecting…")
    open_gate(go)
    open_gate(end)  # the job ends while no daemon watches it
    served.daemon.start()
    expect(web.page.locator("#live")).to_have_text("Live")
    expect(job_row(web, "long").locator(".state")).to_have_text("succeeded")
    expect(job_row(web, "last").locator(".state")).to_have_text("succeeded")
    expect(web.page.locator("#wf-state")).to_have_text("succeeded")
    assert web.not_reloaded()


def test_without_logging_in_a_browser_gets_nothing(browser: Any, served: Served) -> None:
    wf = served.workflow("name: secret-name\njobs:\n  a: {run: 'true'}\n")
    context = browser.new_context()
    try:
        page = context.new_page()
        for path in ("", f"w/{wf}", f"w/{wf}/j/a", "static/dashboard.js", f"events?workflow={wf}"):
            response = page.goto(served.url + path)
            assert response is not None and response.status == 401, path
            assert "secret-name" not in page.content() and "workflow-rows" not in page.content()
        used = served.daemon.client.login_link()["login_url"]
        page.goto(used)
        assert page.goto(served.url).status == 200  # logged in by the link...
        other = browser.new_context()
        assert other.new_page().goto(used).status == 401  # ...which works only once
        other.close()
    finally:
        context.close()
