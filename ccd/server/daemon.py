"""The ccd daemon: lifecycle, signals, the state-dir lock, the socket and TCP port, sd_notify.

``startup()`` takes the state dir's lock, binds the Unix socket (and, when asked, a loopback
TCP port: the same API behind the token of ``auth.py``), opens the engine, re-attaches to
every job that was running, and only then serves; ``serve()`` waits for a stop;
``shutdown()`` stops taking requests and leaves running jobs running (their state is in the
store and in their status files, so the next daemon picks them up). A second SIGTERM/SIGINT
exits at once; SIGHUP reloads the config's limits and hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fcntl
import ipaddress
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import structlog
import uvicorn

from ccd import logs, paths
from ccd.engine import Engine
from ccd.errors import AlreadyRunning, CcdError, ConfigError
from ccd.server import config as config_mod
from ccd.server import sdnotify
from ccd.server.api import EventStreams, create_app
from ccd.server.auth import Credentials, SocketGuard, TcpGuard
from ccd.server.config import Config, HttpConfig
from ccd.server.guards import App, PeerCheckedH11Protocol

log = structlog.get_logger("ccd.daemon")

LOCK_NAME = "ccd.lock"
EXIT_FORCED = 130


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self._config_path = config_path
        self._stop = asyncio.Event()
        self._lock_file: IO[str] | None = None
        self._engine: Engine | None = None
        # One per door (the socket, the TCP port): the server and the task serving it.
        self._servers: list[tuple[ApiServer, asyncio.Task[None]]] = []
        self._streams: EventStreams | None = None
        self._socket_bound = False
        self._watchdog: asyncio.Task[None] | None = None
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------

    async def startup(self) -> None:
        sdnotify.take_environment()
        state_dir = paths.prepare_state_dir(self.config.state_dir)
        self._lock_file = _lock_state_dir(state_dir, self.config.socket)
        # Before touching any job: a socket another daemon serves ends this one here. Clients
        # that connect while we recover wait in the backlog.
        sock = _bind_socket(self.config.socket)
        self._socket_bound = True
        tcp = None if self.config.http.listen is None else _bind_tcp(self.config.http)
        http_url = None if tcp is None else _url_of(tcp)
        logs.configure(state_dir / paths.LOG_NAME, console=logs.console_default())
        credentials = Credentials.open(state_dir)
        self._engine = await Engine.open(
            state_dir, self.config.hosts, self.config.limits, notify=self.config.notify
        )
        await self._engine.recover()  # reconcile before serving any request
        self._streams = EventStreams(self._engine)
        app = create_app(
            self._engine,
            self._streams,
            started_at=time.time(),
            max_request_bytes=self.config.max_request_bytes,
            credentials=credentials,
            http_url=http_url,
        )
        await self._serve_on(SocketGuard(app), sock)
        if tcp is not None:
            await self._serve_on(TcpGuard(app, credentials), tcp)
        self._install_signal_handlers()
        self._watchdog = _start_watchdog()
        self.started = True
        sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving on {self.config.socket}")
        log.info(
            "daemon_started",
            socket=str(self.config.socket),
            http=http_url,
            state_dir=str(state_dir),
        )
        _announce(self.config.socket, http_url, credentials)

    async def _serve_on(self, app: App, sock: socket.socket) -> None:
        server = ApiServer(
            uvicorn.Config(
                app,
                http=PeerCheckedH11Protocol,
                lifespan="off",
                log_config=None,
                access_log=False,
                proxy_headers=False,  # X-Forwarded-* from a local process must change nothing
                timeout_graceful_shutdown=max(1, round(self.config.shutdown_grace_s)),
            )
        )
        self._servers.append((server, await server.start(sock)))

    async def serve(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        if self._lock_file is None:
            return  # never got the state dir: nothing of ours to stop
        sdnotify.notify("STOPPING=1")
        log.info("daemon_stopping")
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._streams is not None:
            self._streams.close()  # end event streams, or the servers' shutdown waits on them
        for server, _ in self._servers:
            server.stop()
        await asyncio.gather(*(serving for _, serving in self._servers))
        if self._engine is not None:
            await asyncio.shield(self._engine.close())  # running jobs keep running
        if self._socket_bound:
            with contextlib.suppress(FileNotFoundError):
                self.config.socket.unlink()
        self._lock_file.close()
        log.info("daemon_stopped")

    async def run_async(self) -> None:
        try:
            await self.startup()
            await self.serve()
        finally:
            await self.shutdown()

    # -- signals --------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self) -> None:
        if self._stop.is_set():  # the second one: do not wait for anything
            os._exit(EXIT_FORCED)
        self._stop.set()

    def _on_reload_signal(self) -> None:
        sdnotify.notify("RELOADING=1")
        try:
            new = config_mod.load(
                self._config_path, state_dir=self.config.state_dir, socket=self.config.socket
            )
        except ConfigError as err:
            log.error("reload_failed", error=str(err))
        else:
            assert self._engine is not None
            self._engine.reload(new.hosts, new.limits, new.notify)
            self.config = dataclasses.replace(new, http=self.config.http)  # read at start only
            log.info("config_reloaded")
        sdnotify.notify("READY=1")


class ApiServer(uvicorn.Server):
    """uvicorn's server, run by its own `serve()`, except where the daemon must differ: the
    daemon owns the signals (SIGHUP reloads, a second SIGTERM forces an exit), and its stop
    is an event, not a 0.1 s poll of ``should_exit``."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._listening = asyncio.Event()
        self._stopping = asyncio.Event()

    async def start(self, sock: socket.socket) -> asyncio.Task[None]:
        """Serve on ``sock`` from a task of its own; return it once listening (raise what
        kept the server from starting)."""
        serving = asyncio.create_task(self.serve(sockets=[sock]), name="api-server")
        listening = asyncio.create_task(self._listening.wait())
        await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            serving.result()  # the reason it stopped, if it raised
            raise CcdError("the API server stopped before it listened")
        return serving

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon's handlers stay in place

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._listening.set()

    async def main_loop(self) -> None:
        await self._stopping.wait()


def _lock_state_dir(state_dir: Path, socket_path: Path) -> IO[str]:
    """One daemon per state dir: hold an exclusive lock for the daemon's lifetime."""
    lock_path = state_dir / LOCK_NAME
    lock_file = lock_path.open("a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "?"
        lock_file.close()
        raise AlreadyRunning(
            f"another ccd (pid {holder}) is running on {state_dir} (socket {socket_path})"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


def _bind_socket(path: Path) -> socket.socket:
    """Listen on ``path``: mode 0600, in a directory only we can enter."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.parent.stat().st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise CcdError(f"socket directory {path.parent} must be private (chmod 700 it)")
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    path.chmod(0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _bind_tcp(http: HttpConfig) -> socket.socket:
    """Listen on ``http.listen``: a loopback address, unless ``allow_remote`` says otherwise
    (then say why that is risky)."""
    address = http.address()
    assert address is not None
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            *address, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as err:
        raise CcdError(f"cannot listen on {http.listen}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
    except OSError as err:
        sock.close()
        raise CcdError(f"cannot listen on {http.listen}: {err.strerror}") from None
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        if not http.allow_remote:
            sock.close()
            raise CcdError(
                f"HTTP address {http.listen} is not a loopback address: other machines could "
                "reach the API, over plain HTTP. Use 127.0.0.1 and `ssh -L` (see README), or "
                "pass --http-allow-remote (http.allow_remote: true) to bind it anyway"
            )
        print(
            f"ccd: warning: {_url_of(sock)} is reachable from other machines. ccd speaks plain "
            "HTTP: the token and session cookies cross the network unencrypted, for anyone on "
            "the way to read and reuse. Prefer 127.0.0.1 and `ssh -L 8787:localhost:8787 HOST` "
            "from your laptop (see README).",
            file=sys.stderr,
            flush=True,
        )
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _url_of(sock: socket.socket) -> str:
    """The URL a browser on this machine (or at the end of a tunnel) opens."""
    host, port = sock.getsockname()[:2]
    ip = ipaddress.ip_address(host)
    name = socket.gethostname() if ip.is_unspecified else f"[{ip}]" if ip.version == 6 else host
    return f"http://{name}:{port}/"


def _announce(socket_path: Path, http_url: str | None, credentials: Credentials) -> None:
    """Say where the daemon listens (stderr: the terminal, or the journal under systemd)."""
    print(f"ccd: listening on {socket_path}", file=sys.stderr)
    if http_url is not None:
        print(
            f"ccd: listening on {http_url} (token in {credentials.token_path}; "
            "`ccctl web` prints a login link)",
            file=sys.stderr,
        )
    sys.stderr.flush()


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a daemon that died; refuse one that something still serves
    (another daemon, on another state dir) and anything that is not a socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise CcdError(f"{path} exists and is not a socket: move it, or give ccd another --socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # nobody listens: stale
            return
    raise CcdError(f"socket {path} is in use by another ccd: stop it, or give this one --socket")


def _start_watchdog() -> asyncio.Task[None] | None:
    interval = sdnotify.watchdog_interval_s()
    if interval is None:
        return None

    async def ping() -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    return asyncio.create_task(ping())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ccd", description="The ccd workflow daemon.")
    parser.add_argument("--state-dir", type=Path, help="database, log and run dirs")
    parser.add_argument("--socket", type=Path, help="the API's Unix socket")
    parser.add_argument("--config", type=Path, help="YAML config (see configs/ccd.yaml)")
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the API on this loopback TCP address, e.g. 127.0.0.1:8787 (every "
        "request needs the token in <state-dir>/http-token; `ccctl web` logs a browser in)",
    )
    parser.add_argument(
        "--http-allow-remote",
        action="store_true",
        help="let --http bind an address other machines can reach (plain HTTP: see README)",
    )
    args = parser.parse_args(argv)
    try:
        config = config_mod.load(
            args.config,
            state_dir=args.state_dir,
            socket=args.socket,
            http_listen=args.http,
            http_allow_remote=args.http_allow_remote,
        )
        daemon = Daemon(config, args.config)
        asyncio.run(daemon.run_async())
    except CcdError as err:
        print(f"ccd: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # e.g. a state dir or socket path that cannot be made
        where = f"{err.filename}: " if err.filename else ""
        print(f"ccd: {where}{err.strerror or err}", file=sys.stderr)
        sys.exit(1)
    if not daemon.started:
        sys.exit(1)
