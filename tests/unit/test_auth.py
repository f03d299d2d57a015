"""The TCP door's credentials and request checks, as pure functions (the daemon's tests drive
the same through real HTTP)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ccd.errors import CcdError
from ccd.server.auth import (
    LOGIN_CODE_TTL_S,
    MAX_LOGIN_CODES,
    SESSION_MAX_AGE_S,
    TOKEN_NAME,
    Credentials,
    loopback_host,
    same_origin,
)


def test_token_is_created_private_once_and_kept_across_restarts(tmp_path: Path) -> None:
    first = Credentials.open(tmp_path)
    path = tmp_path / TOKEN_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert first.bearer_ok(f"Bearer {token}")
    again = Credentials.open(tmp_path)  # a restart reads the same file
    assert again.bearer_ok(f"Bearer {token}")
    assert path.read_text().strip() == token


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer wrong", "Bearer\tx"]
)
def test_anything_but_the_token_is_refused(tmp_path: Path, header: str | None) -> None:
    assert not Credentials.open(tmp_path).bearer_ok(header)


def test_bearer_scheme_is_case_insensitive(tmp_path: Path) -> None:
    creds = Credentials.open(tmp_path)
    token = (tmp_path / TOKEN_NAME).read_text().strip()
    assert creds.bearer_ok(f"bearer {token}")
    assert not creds.bearer_ok(f"Bearer {token}x")


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    Credentials.open(tmp_path)
    (tmp_path / TOKEN_NAME).chmod(0o640)
    with pytest.raises(CcdError, match="readable by other users"):
        Credentials.open(tmp_path)


def test_a_malformed_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_NAME
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(CcdError, match=f"{TOKEN_NAME}: not a token"):
        Credentials.open(tmp_path)


def test_rotation_replaces_the_file_and_kills_old_token_sessions_and_codes(tmp_path: Path) -> None:
    creds = Credentials.open(tmp_path)
    path = tmp_path / TOKEN_NAME
    old_token = path.read_text().strip()
    session = creds.new_session()
    code = creds.new_login_code()
    old_cookie_name = creds.cookie_name
    creds.rotate()
    new_token = path.read_text().strip()
    assert new_token != old_token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not creds.bearer_ok(f"Bearer {old_token}")
    assert creds.bearer_ok(f"Bearer {new_token}")
    assert not creds.session_ok(session)
    assert not creds.redeem(code)
    assert creds.cookie_name != old_cookie_name
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_a_session_survives_a_restart_and_expires(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    session = Credentials.open(tmp_path).new_session(now)
    restarted = Credentials.open(tmp_path)
    assert restarted.session_ok(session, now + 10)
    assert not restarted.session_ok(session, now + SESSION_MAX_AGE_S + 1)
    issued, _, signature = session.partition(".")
    assert not restarted.session_ok(f"{int(issued) + 1}.{signature}", now)  # issue time forged
    assert not restarted.session_ok(f"{issued}.{'0' * len(signature)}", now)
    for junk in ("", ".", "abc", "12.", ".abc", "x.y"):
        assert not restarted.session_ok(junk, now)


def test_session_cookie_is_httponly_and_strictly_same_site(tmp_path: Path) -> None:
    creds = Credentials.open(tmp_path)
    header = creds.session_cookie(creds.new_session())
    attributes = {part.strip().split("=")[0] for part in header.split(";")}
    assert {"HttpOnly", "SameSite", "Path", "Max-Age"} <= attributes
    assert "SameSite=Strict" in header


def test_login_codes_are_single_use_and_short_lived(tmp_path: Path) -> None:
    creds = Credentials.open(tmp_path)
    code = creds.new_login_code(now_s=100.0)
    assert not creds.redeem("not-a-code", now_s=101.0)
    assert creds.redeem(code, now_s=101.0)
    assert not creds.redeem(code, now_s=102.0)  # used
    late = creds.new_login_code(now_s=200.0)
    assert not creds.redeem(late, now_s=200.0 + LOGIN_CODE_TTL_S + 1)
    assert not creds.redeem("", now_s=200.0)


def test_outstanding_login_codes_are_bounded(tmp_path: Path) -> None:
    creds = Credentials.open(tmp_path)
    codes = [creds.new_login_code(now_s=1.0) for _ in range(MAX_LOGIN_CODES + 5)]
    assert not creds.redeem(codes[0], now_s=2.0)  # the oldest made room
    assert creds.redeem(codes[-1], now_s=2.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({b"host": b"localhost:8787", b"origin": b"http://localhost:8787"}, True),
        ({b"host": b"LOCALHOST:8787", b"origin": b"http://localhost:8787"}, True),
        ({b"host": b"localhost:8787", b"referer": b"http://localhost:8787/w/1"}, True),
        ({b"host": b"localhost:8787", b"origin": b"http://evil.example"}, False),
        ({b"host": b"localhost:8787", b"origin": b"http://localhost:9999"}, False),
        ({b"host": b"localhost:8787", b"origin": b"null"}, False),
        ({b"host": b"localhost:8787", b"referer": b"http://evil.example/localhost:8787"}, False),
        ({b"host": b"localhost:8787"}, False),  # says nothing of where it comes from
        ({b"origin": b"http://localhost:8787"}, False),
        # Origin wins over Referer: a cross-site page cannot borrow a same-site Referer
        ({b"host": b"h:1", b"origin": b"http://evil", b"referer": b"http://h:1/"}, False),
    ],
)
def test_same_origin(headers: dict[bytes, bytes], expected: bool) -> None:
    assert same_origin(headers) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost:8787", True),
        ("127.0.0.1:8787", True),
        ("127.9.9.9", True),
        ("[::1]:8787", True),
        ("localhost", True),
        ("evil.example:8787", False),
        ("localhost.evil.example", False),
        ("10.0.0.1:8787", False),
        ("", False),
    ],
)
def test_loopback_host(host: str, expected: bool) -> None:
    assert loopback_host(host) is expected
