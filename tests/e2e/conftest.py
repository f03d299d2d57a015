"""The dashboard in a real browser: Debian's headless Chromium (/usr/bin/chromium) driven by
playwright (pointed at that binary; playwright's own browser downloads are never used), against
a real daemon's TCP door, logged in by the one-time link that `ccctl web` prints.

Every request a page makes that leaves the daemon is blocked and recorded, and each test
ends by checking there was none (the no-CDN rule) and no script error. Screenshots go to
``$CCD_WEB_ARTIFACTS`` (default: the session's pytest temp dir, under ``screenshots/``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon_fixture import DaemonProcess

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 20_000
# Fast progress reads, so that a marker shows within a fraction of a second.
CONFIG = "limits: {progress_interval_s: 0.1, kill_grace_s: 1}\nhttp: {listen: 127.0.0.1:%d}\n"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("CCD_WEB_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as api:
        launched = api.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@dataclass
class Served:
    daemon: DaemonProcess
    url: str  # ends with "/"
    root: Path
    graphviz: bool  # whether the daemon can find graphviz's dot

    def workflow(self, text: str, name: str = "wf.yaml") -> str:
        """Write a workflow file and submit it; its id."""
        path = self.root / name
        path.write_text(text)
        return self.daemon.client.submit(path)


@pytest.fixture(params=["graphviz"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A daemon with its TCP door on a loopback port (the same one across restarts).
    ``"no-graphviz"``: on a PATH without ``dot``."""
    port = _free_port()
    config = tmp_path / "ccd.yaml"
    config.write_text(CONFIG % port)
    daemon = DaemonProcess(tmp_path, config)
    env: dict[str, str] = {}
    if request.param == "no-graphviz":
        env["PATH"] = str(_path_without_dot(tmp_path / "bin"))
    with _environment(env):
        daemon.start()
    try:
        url = f"http://127.0.0.1:{port}/"
        yield Served(daemon, url, tmp_path, graphviz=request.param == "graphviz")
    finally:
        daemon.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _path_without_dot(folder: Path) -> Path:
    """A directory of links to every program on PATH but graphviz's ``dot``."""
    folder.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        with contextlib.suppress(OSError):
            for program in Path(directory).iterdir():
                link = folder / program.name
                if program.name != "dot" and not link.exists():
                    link.symlink_to(program)
    assert shutil.which("dot", path=str(folder)) is None
    return folder


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Web:
    """A browser tab on the dashboard, recording what it must not do."""

    page: Any
    served: Served
    artifacts: Path
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(self.served.url + path)
        self.page.evaluate("window.__ccdTestMarker = 1")  # gone if the page ever reloads

    def not_reloaded(self) -> bool:
        return bool(self.page.evaluate("window.__ccdTestMarker === 1"))

    def shot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def check_clean(self) -> None:
        assert self.blocked == [], f"requests left the daemon: {self.blocked}"
        assert self.errors == [], f"script errors: {self.errors}"


@pytest.fixture
def web(browser: Any, served: Served, artifacts: Path) -> Iterator[Web]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = Web(context.new_page(), served, artifacts)

    def route(intercepted: Any) -> None:
        if intercepted.request.url.startswith(served.url):
            intercepted.continue_()
        else:
            tab.blocked.append(intercepted.request.url)
            intercepted.abort()

    context.route("**/*", route)
    tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
    login = served.daemon.client.login_link()["login_url"]  # the token's one-time link
    tab.page.goto(login)
    tab.page.wait_for_url(served.url)  # logged in, and sent on to the dashboard
    yield tab
    context.close()
    tab.check_clean()
