"""The harness every server test uses: a real server process over real HTTP, on SQLite or on a
fresh PostgreSQL database (BRIEF §7).

Use it as a pytest plugin (`pytest_plugins = ("tests.live_server",)` in the test module), then
ask for a fixture (or call `start_live_server` / `postgres_database` yourself):

    live_sqlite    `paycode-server run` (Flask, threaded) on an SQLite file
    live_postgres  `paycode-server serve --workers 2` (gunicorn) on its own PostgreSQL database
    live_server    parametrized over both ("sqlite", "postgres")
    postgres_url   just a fresh, empty PostgreSQL database URL

`start_live_servers` runs several `serve` instances on one PostgreSQL database, as separate
hosts would (tests/test_scale_out.py); `all_at_once` fires calls at the same moment.

Servers are module-scoped (start-up costs about two seconds); tests that share one use distinct
names. PostgreSQL unreachable: the test is skipped, except under CI=true where it fails. A test
that fails gets the server's log attached to its report.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import json
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
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from unittest import mock

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session

REPO_ROOT = Path(__file__).resolve().parents[1]
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
BARRIER_TIMEOUT_S = 30.0
HTTP_GET_TIMEOUT_S = 20.0
T = TypeVar("T")


# -- PostgreSQL --------------------------------------------------------------------------------


def _postgres_unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI=true: CI must never pass by skipping the PostgreSQL tests."""
    message = f"PostgreSQL at {make_url(POSTGRES_ADMIN_URL).render_as_string()} unusable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def admin_connection() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S
        )
    except psycopg.Error as error:
        _postgres_unavailable(str(error).strip().splitlines()[0] if str(error) else repr(error))


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database `paycode_test_<random>`; yields its SQLAlchemy URL, drops it after."""
    name = f"paycode_test_{secrets.token_hex(6)}"
    with admin_connection() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
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
    return subprocess.run(
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
class LiveServer:
    """A running `paycode-server run|serve` plus the environment its admin commands need."""

    backend: str
    database_url: str
    instance: Path
    env: dict[str, str] = field(repr=False)
    url: str = ""
    log_path: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.log_path = self.instance / "server.log"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a paycode-server command against this server's database."""
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
            from paycode.server.database.engine import make_engine

            self._engine = make_engine(self.database_url)
        return self._engine

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits if the block succeeds."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session
            session.commit()

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

    def _spawn(self, mode: str, port: int, workers: int) -> subprocess.Popen[bytes]:
        if mode == "run":
            args = ["run", "--host", "127.0.0.1", "--port", str(port)]
        else:
            args = ["serve", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
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
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_INTERVAL_S)
        return False

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after STOP_TIMEOUT_S."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
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


@contextlib.contextmanager
def start_live_server(
    backend: str,
    *,
    database_url: str | None = None,
    mode: str | None = None,
    workers: int = DEFAULT_WORKERS,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LiveServer]:
    """A server on `backend` ("sqlite": an SQLite file in a temp instance folder; "postgres":
    `database_url`, required). `mode` is "run" or "serve"; by default SQLite gets the development
    server and PostgreSQL gunicorn, as an operator would run them. `extra_env`: more PAYCODE_*
    settings for the server and its commands (e.g. a short PAYCODE_VERSION_STATUSES_TTL_S)."""
    assert backend in BACKENDS
    instance = Path(tempfile.mkdtemp(prefix=f"paycode-live-{backend}-"))
    if backend == "sqlite":
        database_url = database_url or f"sqlite:///{instance / 'paycode.db'}"
    assert database_url is not None, "postgres needs database_url (see postgres_database)"
    env = server_env(instance, database_url) | (extra_env or {})
    server = LiveServer(backend, database_url, instance, env)
    with _running(
        [server], mode=mode or ("run" if backend == "sqlite" else "serve"), workers=workers
    ):
        yield server


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
    with _running(servers, mode="serve", workers=workers):
        yield servers


@contextlib.contextmanager
def _running(servers: list[LiveServer], *, mode: str, workers: int) -> Iterator[None]:
    """init-db (once: the servers share one database), start them all, and stop them and
    remove their instance folders after; on a failure every server's log goes to stderr.
    init-db runs in this process (run_cli_in_process): the same command, a second sooner;
    tests of init-db itself (test_server_admin) run it as a process of its own."""
    failed = False
    try:
        init = servers[0].cli_in_process("init-db")
        if init.returncode != 0:
            raise RuntimeError(f"init-db failed:\n{init.stdout}{init.stderr}")
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            for started in [pool.submit(s.start, mode=mode, workers=workers) for s in servers]:
                started.result()
        yield
    except BaseException:
        failed = True
        raise
    finally:
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            list(pool.map(LiveServer.stop, servers))  # together: each takes about a second
        for server in servers:
            if failed:
                print(
                    f"--- {server.backend} server log ({server.url}) ---\n{server.log()}",
                    file=sys.stderr,
                )
            shutil.rmtree(server.instance, ignore_errors=True)


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    """(status, Content-Type, JSON body) of a GET over real HTTP, error answers included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_GET_TIMEOUT_S) as answer:
            return answer.status, answer.headers["Content-Type"], json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], json.loads(error.read())


def all_at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run every call in its own thread, released at the same moment by a barrier; their
    results in order (a call that raises re-raises here)."""
    barrier = threading.Barrier(len(calls))

    def one(call: Callable[[], T]) -> T:
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(one, calls))


# -- pytest fixtures and the failure hook -------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty (not migrated) PostgreSQL database, dropped after the test."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def live_sqlite() -> Iterator[LiveServer]:
    with start_live_server("sqlite") as server:
        yield server


@pytest.fixture(scope="module")
def live_postgres() -> Iterator[LiveServer]:
    with postgres_database() as url, start_live_server("postgres", database_url=url) as server:
        yield server


@pytest.fixture(
    name="live_server",
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def live_server_fixture(request: pytest.FixtureRequest) -> LiveServer:
    server: LiveServer = request.getfixturevalue(f"live_{request.param}")
    return server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the log of every live server a failed test used to its report."""
    report = yield
    if report.failed:
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        values = [v for value in funcargs.values() for v in _servers_in(value)]
        servers = {id(v): v for v in values}
        for server in servers.values():
            report.sections.append((f"{server.backend} server log ({server.url})", server.log()))
    return report


def _servers_in(value: Any) -> list[LiveServer]:
    """A fixture's live servers: itself, or the members of a list of them (start_live_servers)."""
    if isinstance(value, LiveServer):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, LiveServer)]
    return []
