"""paycode-server: operator commands (README, "Running a shop"; docs/operations.md).

    init-db | run | serve | worker (purges; sweeps offline escrows; delivers notifications)
    users create | users top-up | merchants create | terminals create | devices list | revoke
    versions [activate | deprecate | retire V] | keys status | keys rotate-master
    offline sweep (return due offline escrows now)
    settlement --merchant M --date YYYY-MM-DD [--out FILE] | reconcile

Every command reads its configuration from the environment (server.config), opens its own
engine, commits once at the end, and reports failures as `error [code]: message` (exit 1) or,
with --json, as {"ok": false, "error": {...}}; never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from paycode.appkit.console import add_json_flag, emit, run
from paycode.server.commands.accounts import add_account_commands
from paycode.server.commands.common import PROG, CliError, Subparsers
from paycode.server.commands.common import check_url as _check_url
from paycode.server.commands.common import config as _config
from paycode.server.commands.common import database_error as _database_error
from paycode.server.commands.common import hidden_url as _hidden_url
from paycode.server.commands.common import session as _session
from paycode.server.commands.keys import add_lifecycle_commands
from paycode.server.commands.money import add_money_commands
from paycode.server.commands.notifications import add_notification_commands
from paycode.server.commands.offline_commands import add_offline_commands
from paycode.server.commands.points_commands import add_points_commands
from paycode.server.notifications import delivery
from paycode.server.operations import observability, purge
from paycode.server.safety.limits import env_integer
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode

if TYPE_CHECKING:
    from flask import Flask

WORKERS_MAX = 64
THREADS_MAX = 64
THREADS_DEFAULT = 4
"""Request threads per worker process: a charge waits on PostgreSQL for about half its time,
and the threads' charges share one commit (paycode.server.charge.batch_writer)."""
THREADS_ENV = "PAYCODE_SERVE_THREADS"
"""The default of `serve --threads` where the flag is not given (benchmarks, test servers)."""
KEEPALIVE_S = 5
"""How long an idle client connection stays open: a till sends its next request on it instead
of paying a new TCP connection (behind a proxy, set the proxy's upstream keep-alive lower)."""
GUNICORN_TIMEOUT_S = 30
GUNICORN_GRACEFUL_TIMEOUT_S = 10
WORKER_INTERVAL_S_MIN = 0.1


# -- init-db, run, serve, worker ----------------------------------------------------------------


def cmd_init_db(args: argparse.Namespace) -> int:
    """Create or upgrade the schema, then the verifier keys. Safe to run any number of times."""
    from paycode.server.database import migrate  # noqa: PLC0415 - keeps --help fast
    from paycode.server.safety import keyring  # noqa: PLC0415

    config = _config(new_bank=True)
    if config.database_url.startswith("sqlite"):
        config.instance_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        _check_url(config.database_url)
        migrate.upgrade(config.database_url)
    except DBAPIError as error:
        raise _database_error(error) from None
    with _session(config) as session:
        keyring.ensure_keys(session, SecretBox.from_config(config), time.time())
    url = _hidden_url(config.database_url)
    revision = migrate.current_revision(config.database_url)
    emit(
        args,
        f"database ready: {url} (schema {revision}); instance folder {config.instance_path}",
        {"database_url": url, "revision": revision, "instance": str(config.instance_path)},
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Flask's development server: one process, threaded. Use `serve` in production."""
    os.environ.pop(observability.MULTIPROC_ENV, None)  # one process: metrics in memory
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # our JSON line replaces its own
    from paycode.server.app import create_app  # noqa: PLC0415 - after the line above (server.metrics)

    app = create_app(_config())
    print(f"{PROG}: development server on http://{args.host}:{args.port}", file=sys.stderr)
    app.run(host=args.host, port=args.port, threaded=True, debug=False, use_reloader=False)
    return 0


def _parse_bind(bind: str) -> str:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise CliError(ErrorCode.INVALID_ARGUMENT, f"--bind must be HOST:PORT, got {bind[:80]!r}")
    return bind


def cmd_serve(args: argparse.Namespace) -> int:
    """gunicorn with threaded workers that keep connections alive; each worker imports
    server.wsgi (its own engine) after fork."""
    if not 1 <= args.workers <= WORKERS_MAX:
        raise CliError(ErrorCode.INVALID_ARGUMENT, f"--workers must be 1-{WORKERS_MAX}")
    threads = args.threads if args.threads is not None else _threads_from_env()
    if not 1 <= threads <= THREADS_MAX:
        raise CliError(ErrorCode.INVALID_ARGUMENT, f"--threads must be 1-{THREADS_MAX}")
    config = _config()  # a broken configuration fails here, with its code, not in every worker
    # Before anything imports prometheus_client: each worker writes its samples here.
    metrics_dir = observability.prepare_multiprocess_dir(config.instance_path)
    os.environ[observability.MULTIPROC_ENV] = str(metrics_dir)
    options: dict[str, Any] = {
        "bind": [_parse_bind(args.bind)],
        "workers": args.workers,
        "worker_class": "gthread",
        "threads": threads,
        "keepalive": KEEPALIVE_S,
        "timeout": GUNICORN_TIMEOUT_S,
        "graceful_timeout": GUNICORN_GRACEFUL_TIMEOUT_S,
        "accesslog": "-" if args.access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": observability.GunicornJsonLogger,
        "child_exit": observability.gunicorn_child_exit,
        "worker_exit": observability.gunicorn_worker_exit,
        "on_exit": observability.gunicorn_on_exit,
        "proc_name": PROG,
        # gunicorn >= 25.1 opens a control socket at one per-user path: two servers would clash.
        "control_socket_disable": True,
    }
    _run_gunicorn(options)
    return 0


def _threads_from_env() -> int:
    return env_integer(os.environ, THREADS_ENV, THREADS_DEFAULT, low=1, high=THREADS_MAX)


def _run_gunicorn(options: dict[str, Any]) -> None:
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]  # noqa: PLC0415

    class PaycodeGunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(key, value)

        def load(self) -> Flask:
            from paycode.server.wsgi import app  # noqa: PLC0415 - imported in each worker

            return app

    PaycodeGunicorn().run()


def cmd_worker(args: argparse.Namespace) -> int:
    """Purge expired rows and deliver due notifications every --interval-s; --once or
    --iterations-max bound the loop."""
    if args.interval_s < WORKER_INTERVAL_S_MIN:
        raise CliError(
            ErrorCode.INVALID_ARGUMENT, f"--interval-s must be at least {WORKER_INTERVAL_S_MIN}"
        )
    iterations_max = 1 if args.once else args.iterations_max
    if iterations_max is not None and iterations_max < 1:
        raise CliError(ErrorCode.INVALID_ARGUMENT, "--iterations-max must be at least 1")
    config = _config()
    box = SecretBox.from_config(config)
    stop = _stop_on_signals()
    iteration = 0
    while iterations_max is None or iteration < iterations_max:
        with _session(config) as session:
            purged = purge.purge_expired(session, time.time(), guard=config.guard)
        with _session(config) as session:
            swept = purge.sweep_allowances(session, time.time())
        with _session(config) as session:
            sent = delivery.deliver_due(session, box, config.delivery, stopping=stop.is_set)
        counts = " ".join(f"{table}={count}" for table, count in purged.items())
        told = " ".join(f"{name}={count}" for name, count in sent.as_dict().items())
        data = {
            "purged": purged,
            "offline_swept": len(swept),
            "notifications": sent.as_dict(),
        }
        emit(args, f"purged {counts}; offline swept {len(swept)}; notifications {told}", data)
        sys.stdout.flush()
        iteration += 1
        if iteration == iterations_max or stop.wait(args.interval_s):
            break
    return 0


def _stop_on_signals() -> threading.Event:
    """An event SIGTERM/SIGINT set, so the worker finishes its batch and exits 0."""
    stop = threading.Event()

    def _handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


# -- parser -------------------------------------------------------------------------------------


def _add_server_commands(sub: Subparsers) -> None:
    sub.add_parser(
        "init-db", help="create or upgrade the database schema and server keys (idempotent)"
    ).set_defaults(func=cmd_init_db)
    run_parser = sub.add_parser("run", help="development server (Flask, threaded)")
    run_parser.add_argument("--host", default="127.0.0.1")
    run_parser.add_argument("--port", type=int, default=5000)
    run_parser.set_defaults(func=cmd_run)
    serve = sub.add_parser("serve", help="production server (gunicorn, threaded workers)")
    serve.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"request threads per worker (default {THREADS_DEFAULT}, or ${THREADS_ENV})",
    )
    serve.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (default %(default)s)")
    serve.add_argument("--access-log", action="store_true", help="log every request to stdout")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser(
        "worker",
        help="purge expired claims, nonces, sessions; sweep offline escrows; deliver notifications",
    )
    worker.add_argument("--once", action="store_true", help="one pass, then exit")
    worker.add_argument("--interval-s", type=float, default=60.0, help="seconds between passes")
    worker.add_argument("--iterations-max", type=int, default=None, help="stop after N passes")
    worker.set_defaults(func=cmd_worker)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Paycode payment server (operator).")
    add_json_flag(parser)
    sub = parser.add_subparsers(metavar="COMMAND")
    _add_server_commands(sub)
    leaves = [
        *add_account_commands(sub),
        *add_lifecycle_commands(sub),
        *add_notification_commands(sub),
        *add_money_commands(sub),
        *add_offline_commands(sub),
        *add_points_commands(sub),
    ]
    for action in [*sub.choices.values(), *leaves]:
        add_json_flag(action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
