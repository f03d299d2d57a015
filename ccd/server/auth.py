"""Who may use the API over TCP, and the checks that keep a browser from being used against it.

The Unix socket is the root of trust (mode 0600, peer uid checked). The TCP door accepts the
daemon's token (``<state_dir>/http-token``, mode 0600) as ``Authorization: Bearer TOKEN``, or a
browser session cookie. A browser gets its cookie from a one-time login code that only the
socket hands out (``ccctl web``), so the token never appears in a URL. The cookie is an HMAC of
its issue time keyed by the token: it survives a daemon restart and dies with a rotation.
State-changing requests that ride on the cookie must come from the page's own origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import structlog

from ccd.errors import CcdError
from ccd.server.guards import App, Message, Receive, Scope, Send

log = structlog.get_logger("ccd.auth")

TOKEN_NAME = "http-token"
LOGIN_PATH = "/auth/login"  # the one TCP path open without credentials (it takes a code)
LOGIN_CODE_PATH = "/auth/login-code"  # socket only: mints a login code
ROTATE_PATH = "/auth/rotate-token"  # socket only
SOCKET_ONLY_PATHS = frozenset({LOGIN_CODE_PATH, ROTATE_PATH})
LOGIN_CODE_TTL_S = 300.0  # time to open the printed link, tunnel included
SESSION_MAX_AGE_S = 30 * 86400
MAX_LOGIN_CODES = 32  # codes outstanding at once; minting more drops the oldest
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SCOPE_AUTH_KEY = "ccd.auth"  # set on TCP requests: "token" or "cookie"
_TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{32,200}")
_CHALLENGE = ((b"www-authenticate", b"Bearer"),)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class Credentials:
    """The token (kept in its file), the session cookies derived from it, and login codes."""

    def __init__(self, token_path: Path, token: str) -> None:
        self.token_path = token_path
        self._token = token
        self._codes: dict[str, float] = {}  # code -> expiry (monotonic seconds)
        self._revoked = asyncio.Event()  # set by the next rotation; then a fresh one

    @classmethod
    def open(cls, state_dir: Path) -> Credentials:
        """Read ``<state_dir>/http-token``, creating it (mode 0600) on first start."""
        path = state_dir / TOKEN_NAME
        try:
            token = _read_token(path)
        except FileNotFoundError:
            token = _new_token()
            _write_token(path, token)
            log.info("http_token_created", path=str(path))
        return cls(path, token)

    def rotate(self) -> None:
        """A new token: the old one, every cookie made from it and every login code stop
        working now."""
        token = _new_token()
        _write_token(self.token_path, token)
        self._token = token
        self._codes.clear()
        self._revoked.set()  # ends responses still streaming to the old credentials
        self._revoked = asyncio.Event()
        log.info("http_token_rotated", path=str(self.token_path))

    def revocation(self) -> asyncio.Event:
        """Set when the credentials valid now stop being valid."""
        return self._revoked

    # -- bearer token ---------------------------------------------------------------------

    def bearer_ok(self, authorization: str | None) -> bool:
        if authorization is None:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and _equal(value.strip(), self._token)

    # -- browser sessions -----------------------------------------------------------------

    @property
    def cookie_name(self) -> str:
        """Named after the token, so that two daemons reached at localhost (two tunnels, two
        ports: browsers do not separate cookies by port) keep their own sessions."""
        return "ccd_session_" + self._sign("cookie-name")[:10]

    def new_session(self, now_s: float | None = None) -> str:
        issued = int(time.time() if now_s is None else now_s)
        return f"{issued}.{self._sign(f'session:{issued}')}"

    def session_ok(self, value: str | None, now_s: float | None = None) -> bool:
        if not value:
            return False
        issued_text, _, signature = value.partition(".")
        if not issued_text.isdigit() or not _equal(signature, self._sign(f"session:{issued_text}")):
            return False
        age_s = (time.time() if now_s is None else now_s) - int(issued_text)
        return -60 <= age_s < SESSION_MAX_AGE_S  # a minute of clock step back is tolerated

    def session_cookie(self, value: str) -> str:
        """The Set-Cookie value: script-proof, never sent along with a cross-site request."""
        return (
            f"{self.cookie_name}={value}; Path=/; Max-Age={int(SESSION_MAX_AGE_S)}; "
            "HttpOnly; SameSite=Strict"
        )

    def _sign(self, message: str) -> str:
        return hmac.new(self._token.encode(), message.encode(), hashlib.sha256).hexdigest()

    # -- one-time login codes -------------------------------------------------------------

    def new_login_code(self, now_s: float | None = None) -> str:
        now_s = time.monotonic() if now_s is None else now_s
        self._codes = {c: t for c, t in self._codes.items() if t > now_s}
        while len(self._codes) >= MAX_LOGIN_CODES:
            del self._codes[next(iter(self._codes))]  # the oldest
        code = secrets.token_urlsafe(24)
        self._codes[code] = now_s + LOGIN_CODE_TTL_S
        return code

    def redeem(self, code: str, now_s: float | None = None) -> bool:
        """True once for a code minted less than LOGIN_CODE_TTL_S ago; False ever after."""
        expiry = self._codes.pop(code, None)
        return expiry is not None and (time.monotonic() if now_s is None else now_s) < expiry


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(errors="replace"), expected.encode())


def _read_token(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise CcdError(
            f"{path} is readable by other users: delete it (ccd makes a new one, mode 0600, "
            "at its next start) and restart ccd"
        )
    token = path.read_text(encoding="ascii", errors="replace").strip()
    if not _TOKEN_FORMAT.fullmatch(token):
        raise CcdError(
            f"{path}: not a token (32 to 200 of A-Z a-z 0-9 _ -): delete it and "
            "restart ccd for a new one"
        )
    return token


def _write_token(path: Path, token: str) -> None:
    """Replace the file in one rename, so a reader sees the old token or the new, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, f"{token}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


# -- request checks ----------------------------------------------------------------------


def same_origin(headers: Mapping[bytes, bytes]) -> bool:
    """The request names its page's origin (Origin, else Referer), and that is this Host."""
    host = headers.get(b"host", b"").decode("latin-1").lower()
    source = headers.get(b"origin") or headers.get(b"referer")
    if not host or not source:
        return False
    parsed = urlsplit(source.decode("latin-1"))
    return parsed.scheme in ("http", "https") and parsed.netloc.lower() == host


def loopback_host(host: str) -> bool:
    """``host`` (a Host header's value) names this machine's loopback interface."""
    name = urlsplit(f"//{host}").hostname or ""
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def from_browser(headers: Mapping[bytes, bytes]) -> bool:
    """Browsers mark every request they make; command-line clients mark none."""
    return b"origin" in headers or b"sec-fetch-site" in headers


# -- the guards in front of the API, one per door ----------------------------------------


class TcpGuard:
    """Every TCP request shows the token or a session cookie, or gets 401 and nothing else.
    Cookie-borne state changes must come from this origin (cross-site forgery); the routes
    that hand out credentials answer on the socket only. ``/auth/login`` trades a login code
    for a cookie."""

    def __init__(self, app: App, credentials: Credentials) -> None:
        self._app = app
        self._credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets here (lifespan is off): the connection just closes
        headers = dict(scope["headers"])
        if scope["path"] == LOGIN_PATH:
            await self._login(scope, send)
            return
        auth = self._authenticate(headers)
        if auth is None:
            await respond(send, 401, {"error": "unauthorized"}, _CHALLENGE)
            return
        if auth == "cookie" and scope["method"] not in SAFE_METHODS and not same_origin(headers):
            log.warning(
                "cross_site_request_refused",
                method=scope["method"],
                path=scope["path"],
                origin=headers.get(b"origin", b"").decode("latin-1"),
            )
            await respond(send, 403, {"error": "forbidden: cross-site request"})
            return
        if scope["path"] in SOCKET_ONLY_PATHS:
            await respond(send, 403, {"error": "forbidden: only on the daemon's Unix socket"})
            return
        await _until_revoked(
            self._app,
            {**scope, SCOPE_AUTH_KEY: auth},
            receive,
            send,
            self._credentials.revocation(),
        )

    def _authenticate(self, headers: Mapping[bytes, bytes]) -> Literal["token", "cookie"] | None:
        authorization = headers.get(b"authorization")
        if authorization is not None:  # a wrong token is refused even beside a good cookie
            return "token" if self._credentials.bearer_ok(authorization.decode("latin-1")) else None
        cookie = _cookie(headers, self._credentials.cookie_name)
        return "cookie" if self._credentials.session_ok(cookie) else None

    async def _login(self, scope: Scope, send: Send) -> None:
        if scope["method"] != "GET":
            await respond(send, 405, {"error": "method not allowed"}, ((b"allow", b"GET"),))
            return
        query = parse_qs(scope["query_string"].decode("latin-1"))
        code = query.get("code", [""])[0]
        if not self._credentials.redeem(code):
            await respond(send, 401, {"error": "unauthorized"}, _CHALLENGE)
            return
        cookie = self._credentials.session_cookie(self._credentials.new_session())
        # A page that moves on by itself rather than a 303: the next request is then made by
        # this origin's page, so the SameSite=Strict cookie goes with it even when the link
        # was clicked on another site.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"set-cookie", cookie.encode()),
                    (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _LOGGED_IN_PAGE})


_LOGGED_IN_PAGE = (
    b'<!doctype html><html lang="en"><head><meta charset="utf-8">'
    b'<meta http-equiv="refresh" content="0; url=../"><title>ccd: logged in</title></head>'
    b'<body><p>Logged in. <a href="../">Open the dashboard</a>.</p></body></html>'
)


async def _until_revoked(
    app: App, scope: Scope, receive: Receive, send: Send, revoked: asyncio.Event
) -> None:
    """Run ``app``; should the credentials be rotated meanwhile, a response still streaming
    (an event stream) ends as if the client had gone, and the response is closed cleanly."""
    complete = False

    async def receive_or_revoked() -> Message:
        if not revoked.is_set():
            message = asyncio.ensure_future(receive())
            rotation = asyncio.ensure_future(revoked.wait())
            await asyncio.wait((message, rotation), return_when=asyncio.FIRST_COMPLETED)
            rotation.cancel()
            if message.done():
                return message.result()
            message.cancel()
        return {"type": "http.disconnect"}

    async def send_tracked(message: Message) -> None:
        nonlocal complete
        complete = message["type"] == "http.response.body" and not message.get("more_body")
        await send(message)

    await app(scope, receive_or_revoked, send_tracked)
    if revoked.is_set() and not complete:
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class SocketGuard:
    """The socket needs no credentials, but ``ssh -L`` can forward it to a browser's port,
    where any web page could call it. A browser's request must name a loopback Host (a page
    that rebinds its own name to 127.0.0.1 cannot), and one that changes state must come from
    that same origin. Command-line clients, which send neither Origin nor Sec-Fetch-*, pass."""

    def __init__(self, app: App) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if from_browser(headers) and not self._allowed(scope["method"], headers):
                log.warning(
                    "browser_request_refused",
                    method=scope["method"],
                    path=scope["path"],
                    host=headers.get(b"host", b"").decode("latin-1"),
                    origin=headers.get(b"origin", b"").decode("latin-1"),
                )
                await respond(send, 403, {"error": "forbidden: cross-site request"})
                return
        await self._app(scope, receive, send)

    @staticmethod
    def _allowed(method: str, headers: Mapping[bytes, bytes]) -> bool:
        if not loopback_host(headers.get(b"host", b"").decode("latin-1")):
            return False
        return method in SAFE_METHODS or same_origin(headers)


def _cookie(headers: Mapping[bytes, bytes], name: str) -> str | None:
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def respond(
    send: Send, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
