#!/usr/bin/env python3
"""How the dashboard holds up with a big workflow: page load and first paint in Chromium,
and how many events per second its event stream carries.

Starts a real daemon in a temp dir (Chromium logs in to its loopback TCP door), submits
workflows of N jobs (default 10,000: ``wide`` = one root, N jobs, one sink; ``layered`` =
layers of sqrt(N); ``chain``), each held behind a gate job so that it is open while the page
loads, and measures, against a 10-job workflow in the same run as the baseline:

1. the workflow page: server time (GET over the socket; the first one lays the picture out,
   later ones reuse it: median of the rest), HTML size, and in Debian's headless Chromium
   (/usr/bin/chromium) the navigation's response end, first contentful paint, DOM content
   loaded and load event (median of ``--repeat`` fresh page loads);
2. with the gate open and the jobs running, the page open in Chromium: events the page got
   per second, its longest gap between frames (how long it was unresponsive at worst);
   and the stream's live rate against the rate the engine committed events;
3. the stream replaying the finished workflow from id 0 (``/events?after=0``) as a raw
   client reads it, events per second, against SQLite reading the same rows (the floor).

A benchmark, not a test: it prints figures and asserts nothing about time.

    python bench/web_bench.py                  # N=10000, shapes wide,layered,chain
    python bench/web_bench.py --jobs 2000 --shapes wide --repeat 3
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ccd.client import Client  # noqa: E402
from tests.integration.daemon_fixture import DaemonProcess, Sse, read_events  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMING_JS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  return {response: nav.responseEnd, fcp: fcp ? fcp.startTime : null,
          dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd};
}"""
# The longest gap between two animation frames (the page's own stream counts its events).
WATCH_JS = """() => {
  window.__bench = {maxGap: 0, events0: window.ccdStream.events};
  let last = performance.now();
  const frame = (t) => { window.__bench.maxGap = Math.max(window.__bench.maxGap, t - last);
                         last = t; requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
}"""


def shape_yaml(shape: str, n: int, gate: Path) -> str:
    """ccd's format: the shape's jobs (run: 'true'), every root held behind the gate job."""
    if shape == "wide":
        parents = {"prep": []} | {f"work-{i:05d}": ["prep"] for i in range(n - 2)}
        parents["merge"] = [f"work-{i:05d}" for i in range(n - 2)]
    elif shape == "chain":
        parents = {f"step-{i:05d}": [f"step-{i - 1:05d}"] if i else [] for i in range(n)}
    else:
        width = max(1, math.isqrt(n))
        parents = {}
        for i in range(n):
            layer, pos = divmod(i, width)
            above = [(layer - 1) * width + (pos + k) % width for k in (0, 1)]
            parents[f"l{layer:03d}-{pos:03d}"] = (
                [f"l{layer - 1:03d}-{p % width:03d}" for p in above] if layer else []
            )
    lines = [
        f"name: {shape}-{n}",
        "jobs:",
        f"  gate: {{run: 'while [ ! -e {gate} ]; do sleep 0.05; done'}}",
    ]
    for job, needs in parents.items():
        lines.append(f"  {job}: {{run: 'true', needs: [{', '.join(needs or ['gate'])}]}}")
    return "\n".join(lines) + "\n"


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f}" if values else "     n/a"


def server_times(client: Client, path: str, repeat: int) -> tuple[float, list[float], int]:
    """The first GET's ms (lays the picture out), later ones' ms, and the page's bytes."""
    times, size = [], 0
    for _ in range(repeat + 1):
        start = time.perf_counter()
        status, _, body = client._request("GET", path)
        times.append((time.perf_counter() - start) * 1000)
        assert status == 200, (status, body[:200])
        size = len(body)
    return times[0], times[1:], size


def browser_times(browser: Any, url: str, repeat: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"response": [], "fcp": [], "dcl": [], "load": []}
    for _ in range(repeat):
        page = browser.new_page()
        page.goto(url, wait_until="load")
        page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
        for key, value in page.evaluate(TIMING_JS).items():
            if value is not None:
                found[key].append(value)
        page.close()
    return found


def run_workflow(
    daemon: DaemonProcess, browser: Any, url: str, wf: str, gate: Path
) -> dict[str, float]:
    """Open the gate with the page open; measure the page and a raw stream client until the
    workflow ends."""
    page = browser.new_page()
    page.goto(f"{url}w/{wf}")
    page.evaluate(WATCH_JS)
    raw: list[Sse] = []
    done = threading.Event()

    def follow() -> None:
        raw.extend(read_events(daemon.socket, f"/events?workflow={wf}", _finished, timeout_s=900))
        done.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)  # the raw client is connected; the jobs have not started
    start = time.perf_counter()
    gate.touch()
    done.wait(900)
    raw_end = time.perf_counter()
    page.wait_for_function(
        "document.querySelector('#wf-state').textContent.trim() !== 'running'", timeout=900_000
    )
    page_end = time.perf_counter()
    seen = page.evaluate(
        "({...window.__bench, events: window.ccdStream.events - window.__bench.events0})"
    )
    page.close()
    stored = sum(1 for e in raw if e.id is not None)
    return {
        "run_s": raw_end - start,
        "stream_eps": len(raw) / (raw_end - start),
        "stored": stored,
        "page_eps": seen["events"] / (page_end - start),
        "page_lag_s": page_end - raw_end,
        "max_gap_ms": seen["maxGap"],
    }


def _finished(events: list[Sse]) -> bool:
    return bool(events) and events[-1].data["job"] is None and events[-1].data["state"] != "running"


def replay(daemon: DaemonProcess, wf: str) -> tuple[float, float, int]:
    """Events/s: the stream from id 0, and SQLite reading the same rows (the floor)."""
    start = time.perf_counter()
    events = read_events(daemon.socket, f"/events?workflow={wf}&after=0", _finished, timeout_s=600)
    stream_s = time.perf_counter() - start
    with sqlite3.connect(daemon.state_dir / "ccd.db") as db:
        start = time.perf_counter()
        rows = db.execute(
            "SELECT e.*, j.* FROM events e LEFT JOIN jobs j ON j.workflow_id = e.workflow_id"
            " AND j.name = e.job WHERE e.workflow_id = ? ORDER BY e.id",
            (wf,),
        ).fetchall()
        floor_s = time.perf_counter() - start
    return len(events) / stream_s, len(rows) / floor_s, len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--shapes", default="wide,layered,chain")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ccd-web-bench-") as tmp, sync_playwright() as api:
        root = Path(tmp)
        config = root / "ccd.yaml"
        config.write_text("limits: {progress_interval_s: 1}\nhttp: {listen: 127.0.0.1:0}\n")
        daemon = DaemonProcess(root, config).start()
        launched = api.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        link = daemon.client.login_link()
        browser = launched.new_context(viewport={"width": 1280, "height": 900})  # logged in once
        browser.new_page().goto(link["login_url"])
        try:
            measure(args, root, daemon, browser, link["url"])
        finally:
            cancel_all(daemon)
            launched.close()
            daemon.stop()


def measure(
    args: argparse.Namespace, root: Path, daemon: DaemonProcess, browser: Any, url: str
) -> None:
    """Each workflow in turn: its page while held, then its run (one at a time, so that no
    other workflow's gate holds a slot), then the replays; the tables at the end."""
    cases = [("baseline", 10)] + [(shape, args.jobs) for shape in args.shapes.split(",")]
    loads, runs, replays = [], [], []
    for shape, n in cases:
        gate = root / f"gate-{shape}"
        path = root / f"{shape}.yaml"
        path.write_text(shape_yaml("wide" if shape == "baseline" else shape, n, gate))
        wf = daemon.client.submit(path)
        first, later, size = server_times(daemon.client, f"/w/{wf}", args.repeat)
        seen = browser_times(browser, f"{url}w/{wf}", args.repeat)
        loads.append(
            f"{shape:<16}{n:>7}{first:9.1f}{median_ms(later)}{size / 1024:7.0f}"
            f"{median_ms(seen['response'])}{median_ms(seen['fcp'])}{median_ms(seen['dcl'])}"
            f"{median_ms(seen['load'])}"
        )
        r = run_workflow(daemon, browser, url, wf, gate)
        runs.append(
            f"{shape:<16}{r['run_s']:7.1f}{r['stored']:8.0f}{r['stream_eps']:10.0f}"
            f"{r['page_eps']:10.0f}{r['page_lag_s']:11.2f}{r['max_gap_ms']:18.0f}"
        )
        stream_eps, floor_eps, count = replay(daemon, wf)
        replays.append(f"{shape:<16}{count:8d}{stream_eps:10.0f}{floor_eps:14.0f}")
    print(f"ccd dashboard, Chromium {browser.browser.version}, {args.repeat} page loads (ms)\n")
    print(f"{'workflow':<16}{'jobs':>7}{'1st GET':>9}{'GET':>9}{'KiB':>7}{'response':>9}"
          f"{'FCP':>9}{'DOMready':>9}{'load':>9}")  # fmt: skip
    print("\n".join(loads))
    print("\nwhile it runs (page open; raw = a plain client of /events?workflow=ID):")
    print(f"{'workflow':<16}{'run s':>7}{'events':>8}{'raw ev/s':>10}{'page ev/s':>10}"
          f"{'page lag s':>11}{'max frame gap ms':>18}")  # fmt: skip
    print("\n".join(runs))
    print("\nreplay of a finished workflow from id 0 (/events?after=0), events/s:")
    print(f"{'workflow':<16}{'events':>8}{'stream':>10}{'sqlite floor':>14}")
    print("\n".join(replays))


def cancel_all(daemon: DaemonProcess) -> None:
    """Cancel what still runs (say, after Ctrl-C): jobs outlive their daemon."""
    for wf in daemon.client.list_workflows():
        if wf["state"] == "running":
            daemon.client.cancel(wf["id"])


if __name__ == "__main__":
    main()
