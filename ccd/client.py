"""Python client of the ccd daemon's HTTP/JSON API over its Unix socket.

Standard library only, so that ``ccctl status`` starts fast and user scripts need nothing
beyond ccd itself::

    from ccd.client import Client
    c = Client()
    wf = c.submit("workflow.yaml")
    print(c.wait(wf)["workflow"]["state"])
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ccd import paths
from ccd.errors import CcdError, Problem, SpecError

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


class DaemonNotRunning(CcdError):
    def __init__(self, socket_path: Path) -> None:
        super().__init__(
            f"ccd is not running (no daemon at {socket_path}): start it with `ccd` "
            "or `systemctl --user start ccd`"
        )


class ApiError(CcdError):
    """The daemon refused a request; ``str()`` is its message."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


class _Response:
    """An HTTP/1.1 response read off a socket: status, headers, then the body, whole or as
    a stream of lines (server-sent events)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        status_line = self._file.readline()
        if not status_line:
            raise ConnectionError("the daemon closed the connection without answering")
        self.status = int(status_line.split(b" ", 2)[1])
        self.headers: dict[str, str] = {}
        while (line := self._file.readline().rstrip(b"\r\n")) != b"":
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"

    def read(self) -> bytes:
        if not self._chunked:
            length = self.headers.get("content-length")
            return self._file.read(int(length)) if length is not None else self._file.read()
        return b"".join(self._chunks())

    def lines(self) -> Iterator[bytes]:
        """The body's lines as they arrive."""
        pending = b""
        for chunk in self._chunks() if self._chunked else iter(self._file.readline, b""):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from complete

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self._file.readline().split(b";")[0], 16)
            if size == 0:
                return
            yield self._file.read(size)
            self._file.readline()  # the CRLF after each chunk


@dataclass(frozen=True, slots=True)
class LogChunk:
    data: bytes
    offset: int  # where the next read starts
    attempt: int
    done: bool  # the attempt has ended: nothing more will be written


class Client:
    """One method per API call; every call opens a short-lived connection."""

    def __init__(self, socket_path: Path | None = None, timeout_s: float | None = 30.0) -> None:
        if socket_path is None:
            socket_path = paths.default_socket(paths.default_state_dir())
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    # -- calls ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")

    def submit(
        self,
        path: Path | str,
        *,
        fail_fast: bool = False,
        request_id: str | None = None,
    ) -> str:
        """Submit a workflow file; returns its id. Safe to repeat with the same request id."""
        path = Path(path).resolve()
        return self.submit_text(
            _read(path),
            source=path,
            base_dir=path.parent,
            fail_fast=fail_fast,
            request_id=request_id,
        )

    def submit_text(
        self,
        text: str,
        *,
        source: Path,
        base_dir: Path,
        fail_fast: bool = False,
        request_id: str | None = None,
    ) -> str:
        """Submit a workflow given as text (``source`` names it in messages; scripts resolve
        in ``base_dir``); returns its id."""
        body = {
            "yaml": text,
            "source": str(source),
            "base_dir": str(base_dir),
            "fail_fast": fail_fast,
            "request_id": request_id or uuid.uuid4().hex,
        }
        return str(self._json("POST", "/workflows", body)["id"])

    def add_jobs(self, workflow_id: str, path: Path | str) -> dict[str, list[str]]:
        """Add the jobs of a fragment file (ccd's format) to a workflow: ``{"added": [...],
        "existing": [...]}``. Safe to repeat: jobs already there, the same, are left alone."""
        path = Path(path).resolve()
        body = {"yaml": _read(path), "source": str(path), "base_dir": str(path.parent)}
        result: dict[str, list[str]] = self._json(
            "POST", f"/workflows/{quote(workflow_id)}/jobs", body
        )
        return result

    def export(self, workflow_id: str, fmt: str = "yaml") -> str:
        """The workflow as it stands: a ccd workflow file (``yaml``) or ``json`` with every
        job's state, attempts and outputs."""
        path = f"/workflows/{quote(workflow_id)}/export?{urlencode({'format': fmt})}"
        status, _, data = self._request("GET", path)
        if status >= 400:
            raise _api_error(status, data)
        return data.decode()

    def list_workflows(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/workflows")["workflows"]
        return result

    def status(self, workflow_id: str) -> dict[str, Any]:
        return self._json("GET", f"/workflows/{quote(workflow_id)}")

    def attempts(self, workflow_id: str, job: str) -> list[dict[str, Any]]:
        path = f"/workflows/{quote(workflow_id)}/jobs/{quote(job)}/attempts"
        result: list[dict[str, Any]] = self._json("GET", path)["attempts"]
        return result

    def log(
        self, workflow_id: str, job: str, *, offset: int = 0, attempt: int | None = None
    ) -> LogChunk:
        query = {"offset": offset} | ({"attempt": attempt} if attempt is not None else {})
        path = f"/workflows/{quote(workflow_id)}/jobs/{quote(job)}/log?{urlencode(query)}"
        status, headers, data = self._request("GET", path)
        if status >= 400:
            raise _api_error(status, data)
        return LogChunk(
            data,
            int(headers.get("x-ccd-offset", offset + len(data))),
            int(headers.get("x-ccd-attempt", attempt or 0)),
            headers.get("x-ccd-done") == "1",
        )

    def cancel(self, workflow_id: str, jobs: list[str] | None = None) -> dict[str, Any]:
        return self._json("POST", f"/workflows/{quote(workflow_id)}/cancel", {"jobs": jobs})

    def retry(self, workflow_id: str, jobs: list[str] | None = None) -> dict[str, Any]:
        return self._json("POST", f"/workflows/{quote(workflow_id)}/retry", {"jobs": jobs})

    def delete(self, workflow_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/workflows/{quote(workflow_id)}")

    def login_link(self) -> dict[str, Any]:
        """The TCP door's URL and a one-time browser login link (``url``, ``login_url``,
        ``expires_in_s``); the daemon gives them on its socket only."""
        return self._json("POST", "/auth/login-code")

    def rotate_token(self) -> dict[str, Any]:
        """Replace the TCP token: the old one and every browser session stop working."""
        return self._json("POST", "/auth/rotate-token")

    def graph(self, workflow_id: str) -> str:
        return str(self._json("GET", f"/workflows/{quote(workflow_id)}/graph")["dot"])

    def events(self, workflow_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Follow the server-sent event stream: one dict per committed change."""
        query = f"?{urlencode({'workflow': workflow_id})}" if workflow_id else ""
        with self._send("GET", f"/events{query}", None, timeout_s=None) as sock:
            response = _Response(sock)
            if response.status >= 400:
                raise _api_error(response.status, response.read())
            for line in response.lines():
                if line.startswith(b"data: "):
                    yield json.loads(line[6:])

    def wait(self, workflow_id: str) -> dict[str, Any]:
        """Block until the workflow ends; returns its final status."""
        for event in self.events(workflow_id):
            if event.get("job") is None and event.get("state") in TERMINAL_STATES:
                break
        return self.status(workflow_id)

    # -- plumbing -------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, *, timeout_s: float | None
    ) -> socket.socket:
        """Connect and send one request (the connection closes after the response)."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: ccd\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            sock.close()
            raise DaemonNotRunning(self.socket_path) from err
        except OSError:
            sock.close()
            raise
        sock.sendall(head.encode() + b"\r\n" + payload)
        return sock

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        with self._send(method, path, body, timeout_s=self.timeout_s) as sock:
            response = _Response(sock)
            return response.status, response.headers, response.read()

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, _, data = self._request(method, path, body)
        if status >= 400:
            raise _api_error(status, data)
        result: dict[str, Any] = json.loads(data)
        return result


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        problem = Problem(str(path), None, f"cannot read workflow file: {err}")
        raise SpecError([problem]) from err


def _api_error(status: int, data: bytes) -> ApiError:
    try:
        body = json.loads(data)
        message = str(body.get("error") or body.get("detail") or body)
    except (ValueError, AttributeError):
        body, message = None, data.decode(errors="replace").strip() or f"HTTP {status}"
    return ApiError(status, message, body if isinstance(body, dict) else None)
