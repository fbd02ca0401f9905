"""/readyz over real HTTP: ready while the database answers, a typed 503 while it cannot, and
ready again without a restart once it is back. /healthz (liveness) never asks the database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from psycopg import sql

from tests.support.servers import LiveServer, admin_connection, get_json, start_server


def get(server: LiveServer, path: str) -> tuple[int, str, Any]:
    return get_json(f"{server.url}{path}")


def set_connections_allowed(database: str, allowed: bool) -> None:
    """Open or close the database to new connections; closing also ends the open ones (the
    server's pooled connection dies as in a database restart)."""
    with admin_connection() as admin:
        admin.autocommit = True
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(database), sql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )


def test_ready_on_sqlite(live_sqlite: LiveServer) -> None:
    status, _, body = get(live_sqlite, "/readyz")
    assert (status, body["status"]) == (200, "ready")


@pytest.mark.postgres
def test_not_ready_while_postgres_refuses_and_ready_again_after(postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    with start_server("postgres", database_url=postgres_url, workers=1) as server:
        assert get(server, "/readyz")[:1] == (200,)  # the worker now holds a pooled connection
        set_connections_allowed(database, False)
        try:
            for _ in range(2):  # the dead pooled connection, then a refused new one
                status, content_type, body = get(server, "/readyz")
                assert (status, body["code"]) == (503, "database_busy"), body
                assert content_type == "application/problem+json"
                assert "Traceback" not in json.dumps(body) and postgres_url not in json.dumps(body)
            assert get(server, "/healthz")[0] == 200  # the process itself is alive
        finally:
            set_connections_allowed(database, True)
        status, _, body = get(server, "/readyz")
        assert (status, body["status"]) == (200, "ready")
