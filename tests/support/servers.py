"""The server fixtures every test uses, over paycode.server.testing (the one way to start a
server; the benchmarks use it too).

    server          parametrized over ("sqlite", "postgres"): the app in this process, reached
                    through a mounted transport (no socket). For what the server answers.
    live_server     the same two backends as processes over real HTTP: `paycode-server run`
                    on SQLite, `serve --workers 2` (gunicorn) on PostgreSQL. For HTTP itself,
                    for the console scripts as processes, for gunicorn and several processes.
    live_sqlite, live_postgres, app_sqlite, app_postgres   one backend of either
    postgres_url    a fresh, empty PostgreSQL database URL

In-process servers are module-scoped; the two live ones are shared by the whole run (one costs
about two seconds to start and stop, and some thirty modules use one): tests that share one
use distinct names, and a test that must stop, restart or configure a server starts its own
(`started`). PostgreSQL unreachable: the test is skipped, except under CI=true where it
fails. A failed test gets the logs of the live servers it used attached to its report.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from sqlalchemy import Engine, make_url

from paycode.server import testing
from paycode.server.database import migrate
from paycode.server.database.engine import make_engine
from paycode.server.testing import (
    BACKENDS,
    POSTGRES_ADMIN_URL,
    REPO_ROOT,
    InProcessServer,
    LiveServer,
    PostgresUnavailable,
    Server,
    admin_connection,
    free_port,
    run_cli,
    run_cli_in_process,
    run_command,
    run_in_process,
    server_env,
    start_live_servers,
    start_server,
)

__all__ = [
    "BACKENDS",
    "POSTGRES_ADMIN_URL",
    "REPO_ROOT",
    "InProcessServer",
    "LiveServer",
    "Server",
    "admin_connection",
    "all_at_once",
    "free_port",
    "get_json",
    "postgres_database",
    "run_cli",
    "run_cli_in_process",
    "run_command",
    "run_in_process",
    "server_env",
    "start_live_servers",
    "start_server",
]

BARRIER_TIMEOUT_S = 30.0
HTTP_GET_TIMEOUT_S = 20.0
T = TypeVar("T")


def postgres_unavailable(error: PostgresUnavailable) -> NoReturn:
    """Skip, or fail under CI=true: CI must never pass by skipping the PostgreSQL tests."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(error.message)
    pytest.skip(error.message)


@contextlib.contextmanager
def postgres_database(*, migrated: bool = False) -> Iterator[str]:
    """paycode.server.testing.postgres_database, skipped (or failed under CI) when PostgreSQL
    cannot be reached. `migrated`: a copy of a database the migrations brought to head once per
    run (init-db then only checks the revision and makes its keys: a second sooner per server)."""
    try:
        admin_connection().close()
    except PostgresUnavailable as error:
        postgres_unavailable(error)
    with testing.postgres_database(_migrated_template() if migrated else None) as url:
        yield url


_templates = contextlib.ExitStack()
"""The run's migrated template database, dropped when the session finishes."""
_template_name: list[str] = []


def _migrated_template() -> str:
    if not _template_name:
        url = _templates.enter_context(testing.postgres_database())
        migrate.upgrade(url)  # disposes of its engine: a template must have no connection
        _template_name.append(make_url(url).database or "")
    return _template_name[0]


def pytest_sessionfinish() -> None:
    _templates.close()


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


# -- fixtures -----------------------------------------------------------------------------------

BACKEND_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@contextlib.contextmanager
def started(backend: str, where: str, **options: Any) -> Iterator[Server]:
    """start_server on `backend`, with a fresh PostgreSQL database for "postgres"."""
    if backend == "sqlite":
        with start_server("sqlite", where=where, **options) as server:
            yield server
        return
    with (
        postgres_database(migrated=True) as url,
        start_server("postgres", where=where, database_url=url, **options) as server,
    ):
        yield server


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty (not migrated) PostgreSQL database, dropped after the test."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database the migrations alone built (no app, no keys), on each backend:
    for what the schema itself refuses."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'migrated.db'}"
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture(scope="session")
def live_sqlite() -> Iterator[Server]:
    with started("sqlite", "process") as server:
        yield server


@pytest.fixture(scope="session")
def live_postgres() -> Iterator[Server]:
    with started("postgres", "process") as server:
        yield server


@pytest.fixture(name="live_server", scope="module", params=BACKEND_PARAMS)
def live_server_fixture(request: pytest.FixtureRequest) -> Server:
    server: Server = request.getfixturevalue(f"live_{request.param}")
    return server


@pytest.fixture(scope="module")
def app_sqlite() -> Iterator[Server]:
    with started("sqlite", "in_process") as server:
        yield server


@pytest.fixture(scope="module")
def app_postgres() -> Iterator[Server]:
    with started("postgres", "in_process") as server:
        yield server


@pytest.fixture(name="server", scope="module", params=BACKEND_PARAMS)
def server_fixture(request: pytest.FixtureRequest) -> Server:
    server: Server = request.getfixturevalue(f"app_{request.param}")
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


def _servers_in(value: Any) -> list[Server]:
    """A fixture's servers: itself, or the members of a list of them (start_live_servers)."""
    if isinstance(value, Server):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, Server)]
    return []
