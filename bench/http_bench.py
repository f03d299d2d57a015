#!/usr/bin/env python3
"""What the HTTP listener costs an idle daemon: CPU, wake-ups and RSS, listener off vs on.

Starts three real daemons side by side in a temp dir, each warmed the same way (a 2-job
workflow, then ``/openapi.json`` and ``/docs`` with its assets fetched once):

- ``off``: the Unix socket only (the baseline);
- ``on``: also ``--http 127.0.0.1:0`` (the warm-up goes over TCP with the token);
- ``on+stream``: the same, with one ``/events`` stream held open over TCP for the whole window,
  as a dashboard tab left open does.

Then it measures all three over the same idle window (so other load on the machine hits each
alike) and prints one table against the targets (~0% CPU, under 100 MB RSS). It asserts
nothing about time. Run from the repository root:

    python bench/http_bench.py              # 60 s idle window
    python bench/http_bench.py --idle-s 10  # quicker
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from daemon_bench import (  # noqa: E402
    CLK_TCK,
    BenchError,
    Daemon,
    context_switches,
    cpu_ticks,
    loadavg,
    status_kb,
    thread_count,
)

IDLE_CPU_TARGET_PCT = 0.1  # "~0%": under 0.1% of one core
RSS_TARGET_MB = 100.0
LISTENING = re.compile(r"ccd: listening on http://([^/:\s]+):(\d+)/")
WARM_PATHS = (
    "/openapi.json",
    "/docs",
    "/docs/assets/swagger-ui.css",
    "/docs/assets/swagger-ui-bundle.js",
    "/docs/assets/docs-init.js",
)


class HttpDaemon(Daemon):
    def __init__(self, root: Path, http: bool) -> None:
        root.mkdir()
        super().__init__(root, extra_args=["--http", "127.0.0.1:0"] if http else [])
        self.http = http
        self.address: tuple[str, int] | None = None

    def start(self) -> float:
        took = super().start()
        deadline = time.monotonic() + 10
        while self.http and self.address is None:  # said once both doors serve
            found = LISTENING.search(self.stderr_path.read_text())
            if found is not None:
                self.address = (found.group(1), int(found.group(2)))
            elif time.monotonic() > deadline:
                raise BenchError("the daemon did not say where it listens")
            else:
                self.check_alive()
                time.sleep(0.01)
        return took

    def connection(self) -> http.client.HTTPConnection:
        assert self.address is not None
        return http.client.HTTPConnection(*self.address, timeout=30)

    def get(self, path: str) -> bytes:
        """GET over TCP with the token when the listener is on, else over the socket."""
        if self.address is None:
            return self.client._request("GET", path)[2]
        conn = self.connection()
        try:
            conn.request("GET", path, headers=self.auth())
            response = conn.getresponse()
            if response.status != 200:
                raise BenchError(f"GET {path}: HTTP {response.status}")
            return response.read()
        finally:
            conn.close()

    def auth(self) -> dict[str, str]:
        token = (self.state_dir / "http-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def open_stream(self) -> http.client.HTTPConnection:
        conn = self.connection()
        conn.request("GET", "/events", headers=self.auth())
        response = conn.getresponse()
        if response.status != 200:
            raise BenchError(f"GET /events: HTTP {response.status}")
        return conn  # held open; the response is never read to its end


def warm(daemon: HttpDaemon, work: Path) -> None:
    wf = work / "warm.yaml"
    wf.write_text("name: warm\njobs:\n  a: {run: 'true'}\n  b: {run: 'true', needs: [a]}\n")
    daemon.run_workflow(wf)
    for path in WARM_PATHS:
        daemon.get(path)


def measure(daemons: dict[str, HttpDaemon], idle_s: float) -> dict[str, dict[str, str]]:
    before = {name: (cpu_ticks(d.pid), context_switches(d.pid)[0]) for name, d in daemons.items()}
    t0 = time.monotonic()
    time.sleep(idle_s)
    elapsed = time.monotonic() - t0
    rows: dict[str, dict[str, str]] = {}
    for name, d in daemons.items():
        d.check_alive()
        ticks0, switches0 = before[name]
        cpu_s = (cpu_ticks(d.pid) - ticks0) / CLK_TCK
        pct = cpu_s / elapsed * 100
        rss_mb = status_kb(d.pid, "VmRSS") / 1024
        wakeups = (context_switches(d.pid)[0] - switches0) / elapsed
        rows[name] = {
            f"idle CPU over {elapsed:.0f} s": f"{pct:.3f}% ({cpu_s * 1e3:.0f} ms)",
            "wake-ups (voluntary ctx switches)": f"{wakeups:.2f}/s",
            "threads": str(thread_count(d.pid)),
            "RSS (VmRSS), warm, idle": f"{rss_mb:.1f} MB",
            "  within targets?": "ok"
            if pct < IDLE_CPU_TARGET_PCT and rss_mb < RSS_TARGET_MB
            else "MISSED",
        }
    return rows


def print_table(rows: dict[str, dict[str, str]]) -> None:
    names = list(rows)
    figures: Sequence[str] = list(next(iter(rows.values())))
    width = max(len(f) for f in figures) + 2
    header = "figure".ljust(width) + "".join(n.ljust(22) for n in names)
    print(header)
    print("-" * len(header))
    for figure in figures:
        print(figure.ljust(width) + "".join(rows[n][figure].ljust(22) for n in names))
    print(
        f"\ntargets: idle CPU ~0% (< {IDLE_CPU_TARGET_PCT}% of one core), "
        f"RSS < {RSS_TARGET_MB:.0f} MB"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-s", type=float, default=60.0, help="idle window [60]")
    args = parser.parse_args(argv)
    print(f"load average at start: {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ccd-http-bench-") as tmp:
        root = Path(tmp)
        daemons = {
            "off": HttpDaemon(root / "off", http=False),
            "on": HttpDaemon(root / "on", http=True),
            "on+stream": HttpDaemon(root / "stream", http=True),
        }
        stream: http.client.HTTPConnection | None = None
        try:
            for daemon in daemons.values():
                daemon.start()
                warm(daemon, root)
            stream = daemons["on+stream"].open_stream()
            rows = measure(daemons, args.idle_s)
        finally:
            if stream is not None:
                stream.close()
            for daemon in daemons.values():
                daemon.stop()
    print_table(rows)
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
