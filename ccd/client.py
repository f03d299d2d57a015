"""Python client of the ccd daemon's HTTP/JSON API over its Unix socket.

Standard library only, so that ``ccctl status`` starts fast and user scripts need nothing
beyond ccd itself::

    from ccd.client import Client
    c = Client()
    wf = c.submit("workflow.yaml")
    print(c.wait(wf)["workflow"]["state"])
"""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ccd.errors import CcdError

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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


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
            from ccd import config, paths

            socket_path = config.default_socket(paths.default_state_dir())
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
        body = {
            "yaml": path.read_text(),
            "source": str(path),
            "base_dir": str(path.parent),
            "fail_fast": fail_fast,
            "request_id": request_id or uuid.uuid4().hex,
        }
        return str(self._json("POST", "/workflows", body)["id"])

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

    def graph(self, workflow_id: str) -> str:
        return str(self._json("GET", f"/workflows/{quote(workflow_id)}/graph")["dot"])

    def events(self, workflow_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Follow the server-sent event stream: one dict per committed change."""
        query = f"?{urlencode({'workflow': workflow_id})}" if workflow_id else ""
        conn = self._connect(timeout=None)
        try:
            conn.request("GET", f"/events{query}", headers={"Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status >= 400:
                raise _api_error(response.status, response.read())
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    yield json.loads(line[6:])
        finally:
            conn.close()

    def wait(self, workflow_id: str) -> dict[str, Any]:
        """Block until the workflow ends; returns its final status."""
        for event in self.events(workflow_id):
            if event.get("job") is None and event.get("state") in TERMINAL_STATES:
                break
        return self.status(workflow_id)

    # -- plumbing -------------------------------------------------------------------------

    def _connect(self, timeout: float | None) -> _UnixConnection:
        return _UnixConnection(self.socket_path, timeout)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self._connect(self.timeout_s)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            try:
                conn.request(method, path, body=payload, headers=headers)
            except (FileNotFoundError, ConnectionRefusedError) as err:
                raise DaemonNotRunning(self.socket_path) from err
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, _, data = self._request(method, path, body)
        if status >= 400:
            raise _api_error(status, data)
        result: dict[str, Any] = json.loads(data)
        return result


def _api_error(status: int, data: bytes) -> ApiError:
    try:
        body = json.loads(data)
        message = str(body.get("error") or body.get("detail") or body)
    except (ValueError, AttributeError):
        body, message = None, data.decode(errors="replace").strip() or f"HTTP {status}"
    return ApiError(status, message, body if isinstance(body, dict) else None)
