"""A real server for tests and benchmarks, started the way an operator starts one.

    postgres_database()     a fresh PostgreSQL database (dropped after), its SQLAlchemy URL
    start_server(...)       the one way to start a server, on SQLite or PostgreSQL:
        where="in_process"  the app in this process; the wallet and the till reach it through
                            paycode.appkit.http_client.mount, with no socket (fast: for tests
                            of what the server answers, not of HTTP itself)
        where="process"     `paycode-server run` (SQLite) or `serve` (gunicorn, PostgreSQL) on
                            a free port, over real HTTP
    start_live_servers(n)   n `serve` instances of one deployment on one PostgreSQL database
    run_in_process(...)     a console script's main(argv) in this process, output captured

Every server gets its own instance folder, a random master key and `init-db`; its environment
(`Server.env`) is what an operator would export, so `Server.cli(...)` runs paycode-server
commands against the same database. tests/support/servers.py makes pytest fixtures of these;
the benchmarks in bench/ call them directly.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast
from unittest import mock

import psycopg
from flask import Flask
from psycopg import sql
from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session

from paycode.appkit.http_client import RESPONSE_BYTES_MAX, WireReply, WireRequest, mount, unmount
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import PaycodeError

REPO_ROOT = Path.cwd()
"""Where spawned commands run; the repository root when tests or benchmarks are started there."""
BACKENDS = ("sqlite", "postgres")
POSTGRES_ADMIN_URL = os.environ.get(
    "PAYCODE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
POSTGRES_CONNECT_TIMEOUT_S = 3
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.05
START_ATTEMPTS_MAX = 3
"""A free port can be taken between probing and binding; a lost race is retried, boundedly."""
LOG_TAIL_CHARS_MAX = 20_000
DEFAULT_WORKERS = 2
WHERE = ("process", "in_process")


# -- PostgreSQL --------------------------------------------------------------------------------


class PostgresUnavailable(PaycodeError):
    """The PostgreSQL server for tests cannot be reached (the test suite skips, or under
    CI=true fails, on it)."""

    code = ErrorCode.DATABASE_ERROR


def _postgres_unavailable(reason: str) -> NoReturn:
    shown = make_url(POSTGRES_ADMIN_URL).render_as_string()
    raise PostgresUnavailable(f"PostgreSQL at {shown} unusable: {reason}")


def admin_connection() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S
        )
    except psycopg.Error as error:
        _postgres_unavailable(str(error).strip().splitlines()[0] if str(error) else repr(error))


@contextlib.contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A fresh database `paycode_test_<random>`, a copy of `template` if given (a database
    nobody is connected to); yields its SQLAlchemy URL, drops it after."""
    name = f"paycode_test_{secrets.token_hex(6)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with admin_connection() as admin:
        admin.execute(create)
    try:
        url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        _drop_database(name)


def _drop_database(name: str) -> None:
    """Terminate what still uses the database (a server we killed), then drop it."""
    with admin_connection() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


# -- the server process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_env(instance: Path, database_url: str) -> dict[str, str]:
    """The environment an operator would set: no PAYCODE_* leaks in from the test runner."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYCODE_")}
    env.update(
        PAYCODE_INSTANCE=str(instance),
        PAYCODE_DATABASE_URL=database_url,
        PAYCODE_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_command(
    command: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`command` in the repository as a subprocess; never raises on a non-zero exit. Without
    `stdin` the command reads /dev/null, never the developer's terminal."""
    stdin_kwargs: dict[str, Any] = (
        {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    )
    return subprocess.run(  # noqa: S603 - the project's own commands, argument lists
        command,
        **stdin_kwargs,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def run_cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`paycode-server ARGS` (see run_command)."""
    return run_command([sys.executable, "-m", "paycode.server.cli", *args], env, stdin)


_IN_PROCESS_LOCK = threading.Lock()


def run_in_process(
    module: str, env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` as run_command runs it, but in this process: the console script's
    own `main(argv)` (server.cli, client.cli or merchant_pos.cli), with os.environ replaced by
    `env`, stdin from `stdin` (else empty, like /dev/null), stdout and stderr captured. It saves
    the interpreter's start-up, about a second a command, where a test needs a command's work
    and output; tests of the process itself (the console script, signals, a crash, several at
    once) spawn it. One at a time, from the main thread: the worker sets signal handlers, which
    are put back after."""
    assert threading.current_thread() is threading.main_thread(), "spawn it from threads"
    main: Callable[[list[str]], int] = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    with (
        _IN_PROCESS_LOCK,
        mock.patch.dict(os.environ, env, clear=True),
        mock.patch.object(sys, "stdin", io.StringIO(stdin or "")),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            returncode = main(list(args))
        except SystemExit as exit_:  # argparse: usage errors and --help
            code = exit_.code
            returncode = code if isinstance(code, int) else 0 if code is None else 1
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
    argv = [sys.executable, "-m", module, *args]
    return subprocess.CompletedProcess(argv, returncode, out.getvalue(), err.getvalue())


def run_cli_in_process(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`paycode-server ARGS` as run_cli runs it, in this process (see run_in_process)."""
    return run_in_process("paycode.server.cli", env, *args, stdin=stdin)


@dataclass
class Server:
    """A started server, whatever runs it, plus the environment its admin commands need."""

    backend: str
    database_url: str
    instance: Path
    env: dict[str, str] = field(repr=False)
    url: str = ""
    _engine: Engine | None = field(default=None, repr=False)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a paycode-server command against this server's database, as a process."""
        return run_cli(self.env, *args, stdin=stdin)

    def cli_in_process(
        self, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The same command, run in this process (see run_cli_in_process)."""
        return run_cli_in_process(self.env, *args, stdin=stdin)

    @property
    def engine(self) -> Engine:
        """An engine on the same database, for tests that check rows directly."""
        if self._engine is None:
            from paycode.server.database.engine import make_engine  # noqa: PLC0415

            self._engine = make_engine(self.database_url)
        return self._engine

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits if the block succeeds."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session
            session.commit()

    def log(self) -> str:
        """What the server wrote (a process's stdout and stderr); "" when nothing was kept."""
        return ""

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


@dataclass
class LiveServer(Server):
    """`paycode-server run|serve` as a process of its own, over real HTTP."""

    log_path: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.log_path = self.instance / "server.log"

    def log(self) -> str:
        """The tail of the server's stdout and stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-LOG_TAIL_CHARS_MAX:]

    def start(self, *, mode: str, workers: int) -> None:
        """Start the server on a free port and wait (bounded) until /healthz answers."""
        for attempt in range(START_ATTEMPTS_MAX):
            port = free_port()
            self._process = self._spawn(mode, port, workers)
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_healthy():
                return
            self.stop()
            if attempt == START_ATTEMPTS_MAX - 1:
                raise RuntimeError(f"{mode} server did not start; its log:\n{self.log()}")

    def restart(self, *, mode: str, workers: int) -> None:
        """Start again after stop(), on the same port (clients keep their URL), as a server
        back from an outage would."""
        assert self._process is None and self.url
        port = int(self.url.rsplit(":", 1)[1])
        for _attempt in range(START_ATTEMPTS_MAX):
            self._process = self._spawn(mode, port, workers)
            if self._wait_healthy():
                return
            self.stop()
        raise RuntimeError(f"{mode} server did not restart on {port}; its log:\n{self.log()}")

    def _spawn(self, mode: str, port: int, workers: int) -> subprocess.Popen[bytes]:
        if mode == "run":
            args = ["run", "--host", "127.0.0.1", "--port", str(port)]
        else:
            args = ["serve", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(  # noqa: S603 - the project's own console script
                [sys.executable, "-m", "paycode.server.cli", *args],
                env=self.env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: gunicorn workers stop with it
            )

    def _wait_healthy(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                health = f"{self.url}/healthz"  # http://127.0.0.1:PORT, made here
                with urllib.request.urlopen(health, timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_INTERVAL_S)
        return False

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after STOP_TIMEOUT_S."""
        super().stop()
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)


class WsgiTransport:
    """Carries the wallet's and the till's requests to an app in this process: the
    paycode.appkit.http_client Transport for a server with no socket. Each request is a fresh
    Flask test client call from `remote_addr`, so threads may send at once."""

    def __init__(self, app: Flask, remote_addr: str = "127.0.0.1") -> None:
        self.app = app
        self.remote_addr = remote_addr

    def send(self, request: WireRequest, timeout_s: float) -> WireReply:
        del timeout_s  # nothing to wait for: the app answers in this thread
        parts = urllib.parse.urlsplit(request.url)
        response = self.app.test_client().open(
            parts.path,
            method=request.method,
            query_string=parts.query,
            headers=dict(request.headers),
            data=request.body,
            environ_base={"REMOTE_ADDR": self.remote_addr},
        )
        body = response.get_data()[:RESPONSE_BYTES_MAX]
        return WireReply(response.status_code, body, response.headers.get("Date"))


@dataclass
class InProcessServer(Server):
    """The app made by create_app(ServerConfig.from_env(env)) in this process, reached through
    a WsgiTransport mounted at its made-up URL (http://paycode-<random>.test): the wallet, the
    till and their CLIs run in this process talk to it with no socket. For tests of what the
    server answers; tests of HTTP itself, of gunicorn, of several processes use a LiveServer."""

    app: Flask | None = field(default=None, repr=False)

    def start(self) -> None:
        from paycode.server.app import create_app  # noqa: PLC0415 - loads Flask and the app
        from paycode.server.config import ServerConfig  # noqa: PLC0415

        self.app = create_app(ServerConfig.from_env(self.env))
        self.url = f"http://paycode-{secrets.token_hex(4)}.test"
        mount(self.url, WsgiTransport(self.app))

    def stop(self) -> None:
        super().stop()
        if self.app is not None:
            unmount(self.url)
            writer = self.app.extensions.get("paycode_charge_writer")
            if writer is not None:
                writer.close()
            self.app.extensions["paycode_engine"].dispose()
            self.app = None


@contextlib.contextmanager
def start_server(
    backend: str,
    *,
    where: str = "process",
    database_url: str | None = None,
    mode: str | None = None,
    workers: int = DEFAULT_WORKERS,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """The one way to start a server: on `backend` ("sqlite": an SQLite file in a temp
    instance folder; "postgres": `database_url`, required), `where` "process" (a LiveServer:
    `mode` "run" or "serve", by default SQLite gets the development server and PostgreSQL
    gunicorn, as an operator would run them) or "in_process" (an InProcessServer). `extra_env`:
    more PAYCODE_* settings for the server and its commands."""
    assert backend in BACKENDS and where in WHERE
    instance = Path(tempfile.mkdtemp(prefix=f"paycode-{where}-{backend}-"))
    if backend == "sqlite":
        database_url = database_url or f"sqlite:///{instance / 'paycode.db'}"
    assert database_url is not None, "postgres needs database_url (see postgres_database)"
    env = server_env(instance, database_url) | (extra_env or {})
    if where == "in_process":
        server: Server = InProcessServer(backend, database_url, instance, env)
        with _running([server], start=lambda one: cast(InProcessServer, one).start()):
            yield server
        return
    live = LiveServer(backend, database_url, instance, env)
    mode = mode or ("run" if backend == "sqlite" else "serve")
    with _running(
        [live], start=lambda one: cast(LiveServer, one).start(mode=mode, workers=workers)
    ):
        yield live


@contextlib.contextmanager
def start_live_servers(
    count: int, *, database_url: str, workers: int = DEFAULT_WORKERS
) -> Iterator[list[LiveServer]]:
    """`count` instances of one deployment on one PostgreSQL database, as separate hosts run
    them: each a `paycode-server serve` on its own port with its own instance folder, and
    otherwise the first one's environment (the database URL and the master key, so a secret
    one instance sealed opens on every other). init-db runs once; the instances start together."""
    assert count >= 1
    servers: list[LiveServer] = []
    for _ in range(count):
        instance = Path(tempfile.mkdtemp(prefix="paycode-live-postgres-"))
        if servers:
            env = servers[0].env | {"PAYCODE_INSTANCE": str(instance)}
        else:
            env = server_env(instance, database_url)
        servers.append(LiveServer("postgres", database_url, instance, env))

    def start(one: Server) -> None:
        cast(LiveServer, one).start(mode="serve", workers=workers)

    with _running(list(servers), start=start):
        yield servers


@contextlib.contextmanager
def _running(servers: list[Server], *, start: Callable[[Server], None]) -> Iterator[None]:
    """init-db (once: the servers share one database), start them all, and stop them and
    remove their instance folders after; on a failure every server's log goes to stderr.
    init-db runs in this process (run_cli_in_process): the same command, a second sooner;
    tests of init-db itself (tests/server/test_admin.py) run it as a process of its own."""
    failed = False
    try:
        init = servers[0].cli_in_process("init-db")
        if init.returncode != 0:
            raise RuntimeError(f"init-db failed:\n{init.stdout}{init.stderr}")
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            for started in [pool.submit(start, server) for server in servers]:
                started.result()
        yield
    except BaseException:
        failed = True
        raise
    finally:
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            # each server's own stop (Server.stop would only dispose of the engine and leave a
            # LiveServer's process running); together: each takes about a second
            list(pool.map(lambda one: one.stop(), servers))
        for server in servers:
            if failed:
                print(
                    f"--- {server.backend} server log ({server.url}) ---\n{server.log()}",
                    file=sys.stderr,
                )
            shutil.rmtree(server.instance, ignore_errors=True)
