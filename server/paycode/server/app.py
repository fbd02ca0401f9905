"""The application factory: `create_app(config)`; one blueprint per URL area."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy import text
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from paycode.server.charge.batch_writer import writer_slot
from paycode.server.config import ServerConfig
from paycode.server.database.directory import Directory
from paycode.server.database.engine import db, read_only
from paycode.server.http.problems import register_error_handlers
from paycode.server.operations import metrics, observability
from paycode.server.safety.secretbox import SecretBox
from paycode.server.services import CHARGE_WRITER_KEY, CONFIG_KEY
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError


def create_app(config: ServerConfig) -> Flask:
    """The app for `config` (ServerConfig.from_env() in production): nothing is read from the
    environment here."""
    app = Flask("paycode.server", instance_path=str(config.instance_path))
    app.config[CONFIG_KEY] = config
    app.config["MAX_CONTENT_LENGTH"] = config.body_bytes_max
    app.config["TESTING"] = config.testing
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db.init_app(app)
    box = SecretBox.from_config(config)
    app.extensions["paycode_secrets"] = box
    app.extensions["paycode_directory"] = Directory(app.extensions["paycode_engine"], box)
    # PostgreSQL: the process's charge writer, made at its first charge (after the fork).
    app.extensions[CHARGE_WRITER_KEY] = writer_slot(
        app.extensions["paycode_engine"], config.charge_batch
    )
    register_error_handlers(app)
    observability.init_app(app)  # request id, JSON log line
    metrics.init_app(app)  # /metrics, latency
    _register_blueprints(app)
    if config.proxy_hops:
        # The guard's ip: scope, the terminal allow-list, the dashboard's per-address log-in
        # limit and the log's client_addr then see the client, not the proxy. Only the
        # right-most hops entries are believed: what the client sent itself stays ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops)  # type: ignore[method-assign]

    @app.before_request
    def _hostile_framing() -> None:
        # NUL reaches the database as text PostgreSQL refuses (a 500): refused here instead.
        if nul_in_request(request.environ):
            raise ApiError(
                ErrorCode.INVALID_REQUEST, "NUL is not allowed in a path, query or header"
            )
        # A chunked body has no Content-Length: werkzeug stops reading it at
        # MAX_CONTENT_LENGTH without an error, and the request would be read as its prefix.
        chunked = request.content_length is None and "Transfer-Encoding" in request.headers
        if chunked and len(request.get_data(cache=True)) >= config.body_bytes_max:
            raise RequestEntityTooLarge()

    @app.get("/healthz")
    def healthz() -> Response:
        """Liveness: this process serves requests. Never touches the database."""
        return jsonify(status="ok", server_time=time.time())

    @app.get("/readyz")
    def readyz() -> Response:
        """Readiness: the database answers a query from this process (one round trip). A
        database that cannot is a 503 database_busy, through the OperationalError handler."""
        with read_only(db.engine) as connection:
            connection.execute(text("SELECT 1")).scalar_one()
        return jsonify(status="ready", server_time=time.time())

    return app


HEADERS_UNPREFIXED = ("CONTENT_TYPE", "CONTENT_LENGTH")
"""The two request headers a WSGI environ holds without the HTTP_ prefix."""


def nul_in_request(environ: Mapping[str, Any]) -> bool:
    """NUL in the path, in the query (as %00) or in any header value, read from the WSGI
    environ's raw strings (latin-1 as the server received them; request.path and
    request.query_string hold NUL exactly when these do): one scan over the header values
    joined, with no header object built per request."""
    if "\x00" in environ.get("PATH_INFO", "") or "%00" in environ.get("QUERY_STRING", ""):
        return True
    values = [
        value
        for key, value in environ.items()
        if (key.startswith("HTTP_") or key in HEADERS_UNPREFIXED) and isinstance(value, str)
    ]
    return "\x00" in "".join(values)


def _register_blueprints(app: Flask) -> None:
    from paycode.server.http import (  # noqa: PLC0415 - keeps import order acyclic
        charges,
        checkout,
        confirm,
        dashboard,
        meta,
        notifications,
        offline_terminal,
        offline_wallet,
        orders,
        points,
        wallet,
        wallet_codes,
        wallet_payments,
        web_wallet,
    )

    app.register_blueprint(meta.bp)
    app.register_blueprint(wallet.bp)
    app.register_blueprint(confirm.bp)
    app.register_blueprint(wallet_payments.bp)
    app.register_blueprint(wallet_codes.bp)
    app.register_blueprint(offline_wallet.bp)
    app.register_blueprint(charges.bp)
    app.register_blueprint(orders.bp)
    app.register_blueprint(offline_terminal.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(web_wallet.bp)
    app.register_blueprint(checkout.api)
    app.register_blueprint(checkout.page)
    app.register_blueprint(points.wallet_bp)
    app.register_blueprint(points.merchant_bp)
