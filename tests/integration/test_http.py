"""The API on loopback TCP, against the real daemon process: the token, browser login,
cross-site forgery, the offline /docs page, and the socket's guard against browsers."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ccd.server.auth import TOKEN_NAME
from tests.integration.daemon_fixture import DaemonProcess, wait_for

LISTENING = re.compile(r"ccd: listening on (http://[^/\s]+/)")
STATE_CHANGE = {"Origin": "http://evil.example", "Content-Type": "application/json"}


class HttpDaemon(DaemonProcess):
    """The daemon with its TCP door open on a free loopback port."""

    def __init__(self, root: Path, *extra: str) -> None:
        super().__init__(root)
        self.extra = list(extra) or ["--http", "127.0.0.1:0"]
        self.url = ""

    def argv(self) -> list[str]:
        return [*super().argv(), *self.extra]

    def start(self) -> HttpDaemon:
        offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        super().start()
        wait_for(lambda: self._announced(offset) is not None, 10, "the daemon to name its URL")
        self.url = self._announced(offset) or ""
        return self

    def _announced(self, offset: int) -> str | None:
        found = LISTENING.search(self.stderr_path.read_text()[offset:])
        return found.group(1) if found else None

    @property
    def token(self) -> str:
        return (self.state_dir / TOKEN_NAME).read_text().strip()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
        body: object = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request on the TCP door; no redirect is followed."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            sent["Cookie"] = cookie
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=payload, headers=sent)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def web(self, *args: str) -> dict[str, str]:
        done = self.ccctl("web", "--json", *args)
        assert done.returncode == 0, done.stderr
        result: dict[str, str] = json.loads(done.stdout)
        return result

    def login(self) -> str:
        """Open a fresh login link; the cookie it sets, as a Cookie header's value."""
        link = self.web()["login_url"]
        status, headers, _ = self.request("GET", link.removeprefix(self.url.rstrip("/")))
        assert status == 200, link
        return headers["set-cookie"].split(";")[0]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[HttpDaemon]:
    d = HttpDaemon(tmp_path).start()
    yield d
    d.stop()


def sleeper(tmp_path: Path) -> Path:
    path = tmp_path / "sleep.yaml"
    path.write_text(
        textwrap.dedent("""
        name: sleeper
        jobs:
          a: {run: 'sleep 60'}
    """)
    )
    return path


def submit_body(path: Path) -> dict[str, object]:
    return {"yaml": path.read_text(), "source": str(path), "base_dir": str(path.parent)}


def job_state(d: DaemonProcess, wf_id: str, job: str) -> str:
    jobs = {j["name"]: j for j in d.client.status(wf_id)["jobs"]}
    return str(jobs[job]["state"])


# -- listening -------------------------------------------------------------------------


def test_daemon_says_where_it_listens_and_serves_the_same_api(
    daemon: HttpDaemon, tmp_path: Path
) -> None:
    stderr = daemon.stderr_path.read_text()
    assert f"ccd: listening on {daemon.socket}" in stderr
    assert urlsplit(daemon.url).hostname == "127.0.0.1"
    status, _, body = daemon.request(
        "POST", "/workflows", token=daemon.token, body=submit_body(sleeper(tmp_path))
    )
    assert status == 201, body
    wf_id = json.loads(body)["id"]
    assert daemon.client.status(wf_id)["workflow"]["name"] == "sleeper"  # the socket sees it
    status, _, body = daemon.request("GET", "/workflows", token=daemon.token)
    assert json.loads(body)["workflows"] == daemon.client.list_workflows()
    status, _, body = daemon.request(
        "POST", f"/workflows/{wf_id}/cancel", token=daemon.token, body={"jobs": None}
    )
    assert status == 200, body
    wait_for(lambda: job_state(daemon, wf_id, "a") == "cancelled", what="the cancel")


def test_config_file_opens_the_tcp_door(tmp_path: Path) -> None:
    config = tmp_path / "ccd.yaml"
    config.write_text("http:\n  listen: 127.0.0.1:0\n")
    d = HttpDaemon(tmp_path, "--config", str(config)).start()
    try:
        assert d.request("GET", "/health", token=d.token)[0] == 200
    finally:
        d.stop()


def test_no_tcp_door_unless_asked(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path).start()
    try:
        assert "http://" not in d.stderr_path.read_text()
        web = d.ccctl("web")
        assert web.returncode == 1 and "--http 127.0.0.1:8787" in web.stderr
    finally:
        d.stop()


def test_binding_beyond_loopback_needs_an_explicit_option(tmp_path: Path) -> None:
    refused = subprocess.run(
        HttpDaemon(tmp_path, "--http", "0.0.0.0:0").argv(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "--http-allow-remote" in refused.stderr
    assert "not a loopback address" in refused.stderr
    d = HttpDaemon(tmp_path, "--http", "0.0.0.0:0", "--http-allow-remote").start()
    try:
        stderr = d.stderr_path.read_text()
        assert "reachable from other machines" in stderr and "ssh -L" in stderr
        assert d.request("GET", "/health")[0] == 401  # still behind the token
    finally:
        d.stop()


# -- the token ---------------------------------------------------------------------------


def test_token_file_is_private_and_kept_across_restarts(tmp_path: Path) -> None:
    d = HttpDaemon(tmp_path).start()
    try:
        path = d.state_dir / TOKEN_NAME
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = d.token
    finally:
        d.stop()
    d.start()
    try:
        assert d.token == token
        assert d.request("GET", "/health", token=token)[0] == 200
    finally:
        d.stop()


UNAUTHORIZED_PATHS = [
    "/health",
    "/workflows",
    "/workflows/x",
    "/events",
    "/docs",
    "/openapi.json",
    "/docs/assets/swagger-ui-bundle.js",
    "/",
    "/nope",
    "/redoc",
    "/auth/login-code",
]


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"token": "wrong"},
        {"cookie": "ccd_session_0=1.abc"},
        {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
    ],
    ids=["none", "wrong-token", "forged-cookie", "basic-auth"],
)
def test_without_the_token_every_request_gets_401_and_nothing_else(
    daemon: HttpDaemon, credentials: dict[str, object]
) -> None:
    for method, path in [("GET", p) for p in UNAUTHORIZED_PATHS] + [
        ("POST", "/workflows"),
        ("DELETE", "/workflows/x"),
        ("POST", "/auth/rotate-token"),
        ("OPTIONS", "/workflows"),
        ("HEAD", "/docs"),
    ]:
        status, headers, body = daemon.request(method, path, **credentials)  # type: ignore[arg-type]
        assert status == 401, (method, path)
        assert headers["www-authenticate"] == "Bearer"
        if method != "HEAD":
            assert json.loads(body) == {"error": "unauthorized"}, (method, path)
    assert daemon.client.health()["status"] == "ok"


def test_a_good_cookie_does_not_rescue_a_wrong_token(daemon: HttpDaemon) -> None:
    cookie = daemon.login()
    assert daemon.request("GET", "/health", cookie=cookie)[0] == 200
    assert daemon.request("GET", "/health", cookie=cookie, token="wrong")[0] == 401


def test_credential_routes_answer_on_the_socket_only(daemon: HttpDaemon) -> None:
    token = daemon.token
    for path in ("/auth/login-code", "/auth/rotate-token"):
        status, _, body = daemon.request("POST", path, token=token)
        assert status == 403, path
        assert "Unix socket" in json.loads(body)["error"]
    assert daemon.token == token  # nothing rotated


# -- browser login -----------------------------------------------------------------------


def test_ccctl_web_prints_the_dashboard_and_a_one_time_login_link(daemon: HttpDaemon) -> None:
    done = daemon.ccctl("web")
    assert done.returncode == 0, done.stderr
    assert daemon.url in done.stdout
    links = re.findall(r"http://\S+/auth/login\?code=\S+", done.stdout)
    assert len(links) == 1
    assert daemon.token not in done.stdout  # the token never travels in a URL
    port = urlsplit(daemon.url).port
    assert f"ssh -N -L {port}:localhost:{port} " in done.stdout  # how to reach it from a laptop
    path = links[0].removeprefix(daemon.url.rstrip("/"))
    status, headers, page = daemon.request("GET", path)
    assert status == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert daemon.token not in cookie
    assert headers["cache-control"] == "no-store"
    # It moves on to the dashboard, by a relative URL
    assert b'http-equiv="refresh" content="0; url=../"' in page
    assert b"http" not in page.replace(b"http-equiv", b"")
    assert daemon.request("GET", path)[0] == 401  # used once, gone
    assert daemon.request("GET", "/auth/login?code=")[0] == 401
    assert daemon.request("GET", "/auth/login")[0] == 401
    assert daemon.request("POST", path)[0] == 405


def test_cookie_works_across_a_restart_and_dies_with_rotation(tmp_path: Path) -> None:
    d = HttpDaemon(tmp_path).start()
    try:
        cookie = d.login()
        old_token = d.token
        status, _, body = d.request("GET", "/workflows", cookie=cookie)
        assert status == 200 and json.loads(body) == {"workflows": []}
    finally:
        d.stop()
    d.start()  # a new process: the page's cookie still works
    try:
        assert d.request("GET", "/workflows", cookie=cookie)[0] == 200
        unused_link = d.web()["login_url"]
        rotated = d.ccctl("web", "--rotate-token")
        assert rotated.returncode == 0, rotated.stderr
        assert "rotated" in rotated.stdout and str(d.state_dir / TOKEN_NAME) in rotated.stdout
        assert d.token != old_token
        assert d.request("GET", "/workflows", cookie=cookie)[0] == 401
        assert d.request("GET", "/workflows", token=old_token)[0] == 401
        assert d.request("GET", unused_link.removeprefix(d.url.rstrip("/")))[0] == 401
        assert d.request("GET", "/workflows", token=d.token)[0] == 200
        assert d.request("GET", "/workflows", cookie=d.login())[0] == 200
    finally:
        d.stop()


def test_rotation_ends_event_streams_opened_with_the_old_credentials(daemon: HttpDaemon) -> None:
    cookie = daemon.login()
    parts = urlsplit(daemon.url)
    streams = []
    for credentials in ({"Cookie": cookie}, {"Authorization": f"Bearer {daemon.token}"}):
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        conn.request("GET", "/events", headers=credentials)
        response = conn.getresponse()
        assert response.status == 200
        streams.append((conn, response))
    assert daemon.ccctl("web", "--rotate-token").returncode == 0
    for conn, response in streams:
        # The stream ends (chunked, cleanly), not at a timeout, having sent only its opening
        # (the reconnect delay and the event id it starts from): no event.
        assert b"data:" not in response.read()
        conn.close()
    assert daemon.client.health()["status"] == "ok"


# -- cross-site request forgery -----------------------------------------------------------


def test_forged_cross_site_post_is_refused(daemon: HttpDaemon, tmp_path: Path) -> None:
    wf_id = daemon.client.submit(sleeper(tmp_path))
    wait_for(lambda: job_state(daemon, wf_id, "a") == "running", what="the job to start")
    cookie = daemon.login()
    cancel = f"/workflows/{wf_id}/cancel"
    host = urlsplit(daemon.url).netloc
    forged = [
        {"Origin": "http://evil.example", "Content-Type": "text/plain"},  # a plain <form>
        {"Origin": "http://evil.example", "Content-Type": "application/json"},
        {"Origin": "null", "Content-Type": "application/json"},
        {"Referer": "http://evil.example/page", "Content-Type": "application/json"},
        {"Content-Type": "application/json"},  # says nothing of where it comes from
    ]
    for headers in forged:
        status, _, body = daemon.request(
            "POST", cancel, cookie=cookie, headers=headers, body={"jobs": None}
        )
        assert status == 403, headers
        assert json.loads(body) == {"error": "forbidden: cross-site request"}
    status, _, _ = daemon.request(
        "DELETE", f"/workflows/{wf_id}", cookie=cookie, headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    assert job_state(daemon, wf_id, "a") == "running"  # nothing happened
    # Reads by cookie need no origin; the page's own POST passes.
    assert daemon.request("GET", f"/workflows/{wf_id}", cookie=cookie)[0] == 200
    status, _, body = daemon.request(
        "POST", cancel, cookie=cookie, body={"jobs": None}, headers={"Origin": f"http://{host}"}
    )
    assert status == 200, body
    wait_for(lambda: job_state(daemon, wf_id, "a") == "cancelled", what="the cancel")


def test_bearer_requests_need_no_origin(daemon: HttpDaemon, tmp_path: Path) -> None:
    """A script's token is not carried by the browser: no forgery is possible with it."""
    status, _, body = daemon.request(
        "POST",
        "/workflows",
        token=daemon.token,
        body=submit_body(sleeper(tmp_path)),
        headers={"Origin": "http://elsewhere"},
    )
    assert status == 201, body
    wf_id = json.loads(body)["id"]
    assert daemon.request("DELETE", f"/workflows/{wf_id}", token=daemon.token)[0] in (200, 409)


def _socket_request(d: DaemonProcess, raw: bytes) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(d.socket))
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_socket_forwarded_to_a_browser_refuses_forged_requests(
    daemon: HttpDaemon, tmp_path: Path
) -> None:
    """`ssh -L 8787:/run/user/N/ccd.sock` exposes the socket to the browser's pages."""
    wf_id = daemon.client.submit(sleeper(tmp_path))
    body = json.dumps({"jobs": None}).encode()
    post = (
        f"POST /workflows/{wf_id}/cancel HTTP/1.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    forged = post + b"Host: localhost:8787\r\nOrigin: http://evil.example\r\n\r\n" + body
    assert _socket_request(daemon, forged)[0] == 403
    rebound = (
        b"GET /workflows HTTP/1.1\r\nHost: evil.example:8787\r\nConnection: close\r\n"
        b"Sec-Fetch-Site: same-origin\r\n\r\n"
    )
    assert _socket_request(daemon, rebound)[0] == 403
    assert job_state(daemon, wf_id, "a") in ("pending", "ready", "running")
    page = (
        b"GET /workflows HTTP/1.1\r\nHost: localhost:8787\r\nConnection: close\r\n"
        b"Sec-Fetch-Site: same-origin\r\n\r\n"
    )
    assert _socket_request(daemon, page)[0] == 200
    own = post + b"Host: localhost:8787\r\nOrigin: http://localhost:8787\r\n\r\n" + body
    assert _socket_request(daemon, own)[0] == 200
    wait_for(lambda: job_state(daemon, wf_id, "a") == "cancelled", what="the cancel")


# -- /docs, offline ----------------------------------------------------------------------

EXTERNAL_URL = re.compile(rb"""(?:src|href|url)\s*[=:(]\s*["']?\s*(?:https?:)?//""", re.I)


def test_docs_page_loads_nothing_from_outside(daemon: HttpDaemon) -> None:
    token = daemon.token
    status, headers, page = daemon.request("GET", "/docs", token=token)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert not EXTERNAL_URL.search(page), page
    assets = re.findall(rb'(?:src|href)="([^"]+)"', page)
    assert assets and all(not a.startswith((b"/", b"http")) for a in assets)  # relative
    for asset in assets:
        status, _, data = daemon.request("GET", "/" + asset.decode(), token=token)
        assert status == 200 and data, asset
        if asset.endswith(b"docs-init.js"):
            assert b'url: "openapi.json"' in data and b"validatorUrl: null" in data
    status, _, schema = daemon.request("GET", "/openapi.json", token=token)
    assert status == 200 and json.loads(schema)["info"]["title"] == "ccd"
    assert daemon.request("GET", "/redoc", token=token)[0] == 404  # its CDN page is gone


class SocketForward:
    """What `ssh -L PORT:/path/ccd.sock host` does: a loopback TCP port relayed byte for byte
    to the daemon's Unix socket. Records each request line it relays."""

    def __init__(self, socket_path: Path) -> None:
        self._socket_path = socket_path
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.requests: list[str] = []
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(str(self._socket_path))
            self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, target))
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if target.family == socket.AF_UNIX:
                    self.requests += re.findall(r"^[A-Z]+ \S+", data.decode("latin-1"), re.M)
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)
        for sock in self._sockets:
            sock.close()


def chromium_dom(url: str, profile: Path) -> str:
    """The page's DOM once its scripts ran, in Debian's headless Chromium, with every host
    but localhost unresolvable (a CDN asset would simply not load)."""
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            raise AssertionError("chromium is not installed (scripts/setup.sh installs it)")
        pytest.skip("chromium is not installed")
    argv = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_docs_page_renders_in_chromium_through_a_forwarded_socket(
    daemon: HttpDaemon, tmp_path: Path
) -> None:
    """`ssh -L` straight to the Unix socket: no token, relative URLs, no network."""
    forward = SocketForward(daemon.socket)
    try:
        dom = chromium_dom(f"http://localhost:{forward.port}/docs", tmp_path / "profile")
    finally:
        forward.close()
    assert 'class="swagger-ui"' in dom, dom[-2000:]
    for operation in ("/workflows/{workflow_id}/cancel", "/auth/rotate-token", "/health"):
        assert operation in dom, operation
    assert {"GET /docs", "GET /docs/assets/swagger-ui-bundle.js", "GET /openapi.json"} <= set(
        forward.requests
    ), forward.requests


def test_docs_assets_ship_in_the_wheel(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    source = tmp_path / "src"  # a copy: building in place would write into the checkout
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(*IGNORED))
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*argv, "-w", str(tmp_path), str(source)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("ccd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "docs-init.js", "LICENSE", "README.md"):
        assert f"ccd/server/swagger_ui/{name}" in names


IGNORED = (".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench")


# -- the schema tells the truth ----------------------------------------------------------


_ADD_JOBS = ("/workflows/{workflow_id}/jobs", "post")


def test_openapi_declares_the_errors_routes_give(daemon: HttpDaemon) -> None:
    status, _, body = daemon.request("GET", "/openapi.json", token=daemon.token)
    assert status == 200
    doc = json.loads(body)
    assert doc["security"] == [{"token": []}]
    assert doc["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in body.decode()  # FastAPI's 422, which ccd never sends
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            declared = set(operation["responses"])
            assert {"401", "403"} <= declared, (method, path)
            if method in ("post", "delete"):
                assert "413" in declared, (method, path)
            # 422 only where a workflow file (or fragment) is validated
            takes_yaml = (path, method) in {("/workflows", "post"), _ADD_JOBS}
            assert ("422" in declared) == takes_yaml, (method, path)
    cancel = doc["paths"]["/workflows/{workflow_id}/cancel"]["post"]["responses"]
    assert {"400", "404", "409"} <= set(cancel)
    assert "400" not in doc["paths"]["/health"]["get"]["responses"]  # takes no input
    submitted = doc["paths"]["/workflows"]["post"]["responses"]["201"]["links"]
    assert {link["parameters"]["workflow_id"] for link in submitted.values()} == {
        "$response.body#/id"
    }


def test_undeclared_methods_get_405_with_allow(daemon: HttpDaemon) -> None:
    token = daemon.token
    cases = {
        "/workflows": {"GET", "POST"},
        "/workflows/x": {"GET", "DELETE"},
        "/health": {"GET"},
        "/workflows/x/cancel": {"POST"},
    }
    for path, allowed in cases.items():
        status, headers, body = daemon.request("PUT", path, token=token)
        assert status == 405, path
        assert set(headers["allow"].replace(" ", "").split(",")) - {"HEAD"} == allowed, path
        assert json.loads(body)["error"]


def test_a_log_offset_past_the_largest_file_reads_nothing(
    daemon: HttpDaemon, tmp_path: Path
) -> None:
    """Found by the fuzzer: seek() to 2**53 - 1 is EINVAL on ext4, and was a 500."""
    workflow = tmp_path / "hello.yaml"
    workflow.write_text("name: hello\njobs:\n  hello: {run: 'echo hello'}\n")
    workflow_id = daemon.client.submit(workflow)
    daemon.client.wait(workflow_id)
    chunk = daemon.client.log(workflow_id, "hello", offset=(1 << 53) - 1)
    assert chunk.data == b"" and chunk.done
    assert daemon.client.log(workflow_id, "hello").data == b"hello\n"


# -- fuzzing -----------------------------------------------------------------------------

RUN_SCHEMATHESIS = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"
FUZZ_CONFIG = """
# A body that fits the schema can still hold an invalid workflow file: 422 is then right.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

# A real workflow and job, so that the routes under /workflows/{{workflow_id}} are reached
# beyond their 404 (a random id finds nothing).
[parameters]
workflow_id = "{workflow_id}"
job = "hello"
"""


def test_fuzzing_the_tcp_api_finds_no_5xx_and_no_response_off_schema(
    daemon: HttpDaemon, tmp_path: Path
) -> None:
    """schemathesis, every check, from the daemon's own OpenAPI document over TCP: no server
    error, every status and body as declared, 405 + Allow for undeclared methods, 401 without
    the token; and the daemon alive after it. The seed is printed to replay a failure."""
    workflow = tmp_path / "hello.yaml"
    workflow.write_text("name: hello\njobs:\n  hello: {run: 'echo hello'}\n")
    workflow_id = daemon.client.submit(workflow)
    daemon.client.wait(workflow_id)
    config = tmp_path / "schemathesis.toml"
    config.write_text(FUZZ_CONFIG.format(workflow_id=workflow_id))
    seed = int(os.environ.get("CCD_FUZZ_SEED") or random.randrange(1 << 32))
    argv = [
        sys.executable,
        "-c",
        RUN_SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{daemon.url}openapi.json",
        "--header",
        f"Authorization: Bearer {daemon.token}",
        "--checks",
        "all",
        "--max-examples",
        "15",
        "--exclude-path",
        "/events",
        "--generation-database",
        "none",
        "--seed",
        str(seed),
        "--no-color",
    ]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"CCD_FUZZ_SEED={seed}\n{done.stdout[-8000:]}{done.stderr}"
    assert re.search(r"\d+ generated, \d+ passed", done.stdout), done.stdout[-3000:]
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.client.health()["status"] == "ok"
    log = (daemon.state_dir / "ccd.log").read_text()
    assert '"level": "error"' not in log, log[-3000:]
