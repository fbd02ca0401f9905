"""paycode-server: operator commands (BRIEF §5).

    init-db | run | serve | worker
    users create | users top-up | merchants create | terminals create | devices revoke
    versions [activate | deprecate | retire V] | keys status | keys rotate-master

Every command reads its configuration from the environment (server.config), opens its own
engine, commits once at the end, and reports failures as `error [code]: message` (exit 1) or,
with --json, as {"ok": false, "error": {...}}; never as a traceback.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session

from client.cliutil import add_json_flag, emit, run
from server import admin, lifecycle, rotation
from server.config import ServerConfig
from server.models import DEFAULT_CITY, DEFAULT_COUNTRY
from server.passwords import PASSWORD_CHARS_MAX
from server.secretbox import SecretBox
from shared.errors import PaycodeError
from shared.money import Money, format_amount, parse_amount
from shared.versions.base import VersionStatus
from shared.versions.registry import PREFERRED_VERSION, VERSIONS

if TYPE_CHECKING:
    from flask import Flask

PROG = "paycode-server"
DEFAULT_CURRENCY = "CNY"
WORKERS_MAX = 64
GUNICORN_TIMEOUT_S = 30
GUNICORN_GRACEFUL_TIMEOUT_S = 10
WORKER_INTERVAL_S_MIN = 0.1
DB_MESSAGE_CHARS_MAX = 200


class CliError(PaycodeError):
    """A command-level failure with its own stable code (password_required, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class DatabaseError(PaycodeError):
    """The database refused or could not be reached; the message names the driver's reason."""

    code = "database_error"


# -- shared plumbing ---------------------------------------------------------------------------


def _config() -> ServerConfig:
    return ServerConfig.from_env()


def _hidden_url(url: str) -> str:
    """The URL for printing: a password in it is shown as ***."""
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _session(config: ServerConfig) -> Iterator[Session]:
    """One session on a fresh engine; commits if the block succeeds, rolls back otherwise."""
    from server.db import make_engine  # noqa: PLC0415 - keeps `--help` and `versions` fast

    _check_url(config.database_url)
    engine = make_engine(config.database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
            session.commit()
    except DBAPIError as error:
        raise _database_error(error) from None
    finally:
        engine.dispose()


def _check_url(url: str) -> None:
    """A URL SQLAlchemy cannot use fails with config_invalid, before any connection."""
    try:
        make_url(url).get_dialect()
    except ArgumentError as error:  # includes an unknown dialect or a missing driver
        raise CliError("config_invalid", f"PAYCODE_DATABASE_URL is not usable: {error}") from None


def _database_error(error: DBAPIError) -> DatabaseError:
    """The driver's first line (never the SQL or its parameters), plus what usually fixes it."""
    reason = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
    reason = reason[:DB_MESSAGE_CHARS_MAX] or type(error.orig).__name__
    return DatabaseError(
        f"{reason} (check PAYCODE_DATABASE_URL and run `{PROG} init-db` first)",
    )


def _money_text(amount_minor: int, currency: str) -> str:
    return format_amount(Money(amount_minor, currency))


# -- init-db, run, serve, worker ----------------------------------------------------------------


def cmd_init_db(args: argparse.Namespace) -> int:
    """Create or upgrade the schema, then the verifier keys. Safe to run any number of times."""
    from server import keyring, migrate  # noqa: PLC0415

    config = _config()
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
        f"database ready: {url} (schema {revision})",
        {"database_url": url, "revision": revision},
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Flask's development server: one process, threaded. Use `serve` in production."""
    from server.app import create_app  # noqa: PLC0415

    app = create_app(_config())
    print(f"{PROG}: development server on http://{args.host}:{args.port}", file=sys.stderr)
    app.run(host=args.host, port=args.port, threaded=True, debug=False, use_reloader=False)
    return 0


def _parse_bind(bind: str) -> str:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError("invalid_argument", f"--bind must be HOST:PORT, got {bind[:80]!r}")
    return bind


def cmd_serve(args: argparse.Namespace) -> int:
    """gunicorn with sync workers; each worker imports server.wsgi (its own engine) after fork."""
    if not 1 <= args.workers <= WORKERS_MAX:
        raise CliError("invalid_argument", f"--workers must be 1-{WORKERS_MAX}")
    _config()  # a broken configuration fails here, with its code, not in every worker
    options: dict[str, Any] = {
        "bind": [_parse_bind(args.bind)],
        "workers": args.workers,
        "worker_class": "sync",
        "timeout": GUNICORN_TIMEOUT_S,
        "graceful_timeout": GUNICORN_GRACEFUL_TIMEOUT_S,
        "accesslog": "-" if args.access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": PROG,
        # gunicorn >= 25.1 opens a control socket at one per-user path: two servers would clash.
        "control_socket_disable": True,
    }
    _run_gunicorn(options)
    return 0


def _run_gunicorn(options: dict[str, Any]) -> None:
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]  # noqa: PLC0415

    class PaycodeGunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(key, value)

        def load(self) -> Flask:
            from server.wsgi import app  # noqa: PLC0415 - imported in each worker

            return app

    PaycodeGunicorn().run()


def cmd_worker(args: argparse.Namespace) -> int:
    """Purge expired rows every --interval-s; --once or --iterations-max bound the loop."""
    if args.interval_s < WORKER_INTERVAL_S_MIN:
        raise CliError("invalid_argument", f"--interval-s must be at least {WORKER_INTERVAL_S_MIN}")
    iterations_max = 1 if args.once else args.iterations_max
    if iterations_max is not None and iterations_max < 1:
        raise CliError("invalid_argument", "--iterations-max must be at least 1")
    config = _config()
    stop = _stop_on_signals()
    iteration = 0
    while iterations_max is None or iteration < iterations_max:
        with _session(config) as session:
            purged = admin.purge_expired(session, time.time())
        counts = " ".join(f"{table}={count}" for table, count in purged.items())
        emit(args, f"purged {counts}", {"purged": purged})
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


# -- users, merchants, terminals, devices -------------------------------------------------------


def _read_password(from_stdin: bool) -> str:
    """One line from stdin, or a prompt (twice) on a terminal; never from the command line."""
    if from_stdin:
        line = sys.stdin.readline(PASSWORD_CHARS_MAX + 2)
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError("password_required", "no terminal to prompt on: use --password-stdin")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise CliError("password_mismatch", "the two passwords differ")
    return password


def cmd_users_create(args: argparse.Namespace) -> int:
    password = _read_password(args.password_stdin)
    config = _config()
    with _session(config) as session:
        user = admin.create_user(session, args.name, password, args.currency, now_s=time.time())
        currency = admin.default_currency(session, user.name)
        data = {"user": {"id": user.id, "name": user.name, "currency": currency}}
    emit(args, f"created user {user.name} ({user.id}) with a {currency} account", data)
    return 0


def cmd_users_top_up(args: argparse.Namespace) -> int:
    config = _config()
    with _session(config) as session:
        currency = admin.check_currency(args.currency) if args.currency else None
        currency = currency or admin.default_currency(session, args.name)
        balance_minor = admin.top_up(session, args.name, args.amount, time.time(), currency)
    amount = format_amount(parse_amount(args.amount, currency))
    balance = _money_text(balance_minor, currency)
    data = {
        "user": args.name,
        "currency": currency,
        "amount": amount,
        "balance": balance,
        "balance_minor": balance_minor,
    }
    emit(args, f"topped up {args.name} by {amount} {currency}; balance {balance} {currency}", data)
    return 0


def cmd_merchants_create(args: argparse.Namespace) -> int:
    config = _config()
    with _session(config) as session:
        merchant = admin.create_merchant(
            session,
            args.name,
            args.currency,
            args.notify_url,
            city=args.city,
            country=args.country,
            allow_ips=args.allow_ip,
            now_s=time.time(),
        )
    data = {
        "merchant": {
            "id": merchant.id,
            "name": merchant.name,
            "currency": merchant.currency,
            "city": merchant.city,
            "country": merchant.country,
            "allowed_networks": merchant.allowed_cidrs.split(",") if merchant.allowed_cidrs else [],
            "notify_url": merchant.notify_url,
        }
    }
    emit(args, f"created merchant {merchant.name} ({merchant.id}), {merchant.currency}", data)
    return 0


def cmd_terminals_create(args: argparse.Namespace) -> int:
    """Print the terminal's key id and secret: the only time the secret is ever shown."""
    config = _config()
    with _session(config) as session:
        terminal, secret = admin.create_terminal(
            session, SecretBox.from_config(config), args.merchant, time.time()
        )
        merchant_id = terminal.merchant_id
    secret_b64 = base64.b64encode(secret).decode("ascii")
    human = "\n".join(
        (
            f"terminal for merchant {merchant_id}",
            f"key id: {terminal.id}",
            f"secret: {secret_b64}",
            "Store the secret now: it is not shown again (the server keeps it sealed).",
            f"Configure the POS: paycode-pos configure --server URL --key-id {terminal.id} "
            "--secret-stdin",
        )
    )
    emit(args, human, {"key_id": terminal.id, "secret": secret_b64, "merchant_id": merchant_id})
    return 0


def cmd_devices_revoke(args: argparse.Namespace) -> int:
    config = _config()
    with _session(config) as session:
        revoked = admin.revoke_device(session, args.device_id, time.time())
    state = "revoked" if revoked else "was already revoked"
    emit(
        args, f"device {args.device_id} {state}", {"device_id": args.device_id, "revoked": revoked}
    )
    return 0


# -- versions and master keys -------------------------------------------------------------------

VERSION_ACTIONS = {
    "activate": VersionStatus.ACTIVE,
    "deprecate": VersionStatus.DEPRECATED,
    "retire": VersionStatus.RETIRED,
}
BATCH_ROWS_MAX = 10_000


def cmd_versions(args: argparse.Namespace) -> int:
    """The code versions with their live lifecycle status (the database's, not the default)."""
    with _session(_config()) as session:
        states = {state.version: state for state in lifecycle.read_states(session)}
    rows = [
        {
            "version": codec.version,
            "status": str(states[codec.version].status),
            "changed_at_s": states[codec.version].changed_at_s,
            "symbology": codec.symbology,
            "prefix": codec.prefix,
            "preferred": codec.version == PREFERRED_VERSION,
        }
        for codec in VERSIONS
    ]
    lines = [
        f"{r['version']}  {r['status']:<10} {r['symbology']:<8} prefix {str(r['prefix'])[:12]}"
        + ("  (preferred)" if r["preferred"] else "")
        for r in rows
    ]
    emit(args, "\n".join(lines), {"versions": rows})
    return 0


def cmd_versions_set(args: argparse.Namespace) -> int:
    """deprecate | retire | activate: every server applies it within lifecycle.STATUSES_TTL_S."""
    status = VERSION_ACTIONS[args.action]
    with _session(_config()) as session:
        change = lifecycle.set_status(session, args.version, status, time.time())
        target = lifecycle.reenroll_target(lifecycle.read_statuses(session))
    effect = {
        VersionStatus.ACTIVE: "its codes pay as usual",
        VersionStatus.DEPRECATED: f"its codes still pay; wallets are told to re-enroll on {target}",
        VersionStatus.RETIRED: "its codes are refused with version_retired",
    }[status]
    state = f"{change.before} -> {change.after}" if change.changed else f"already {status}"
    within = f"every server within {lifecycle.STATUSES_TTL_S:.0f} s"
    human = f"{args.version}: {state}; {effect} ({within})"
    data = {
        "version": args.version,
        "before": str(change.before),
        "status": str(change.after),
        "changed": change.changed,
    }
    emit(args, human, data)
    return 0


def cmd_keys_status(args: argparse.Namespace) -> int:
    """Which master key ids the configuration holds and how many rows each one seals."""
    config = _config()
    with _session(config) as session:
        usage = rotation.key_usage(session)
    configured = sorted(config.master_keys)
    lines = [f"current master key: {config.master_key_id} (configured: {', '.join(configured)})"]
    lines += [
        f"{table:<12} " + (" ".join(f"{k}={n}" for k, n in sorted(ids.items())) or "no rows")
        for table, ids in usage.items()
    ]
    missing = sorted({key_id for ids in usage.values() for key_id in ids} - set(configured))
    if missing:
        lines.append(f"not configured, their rows cannot be opened: {', '.join(missing)}")
    data = {
        "current_key_id": config.master_key_id,
        "configured_key_ids": configured,
        "missing_key_ids": missing,
        "rows": usage,
        "not_current": rotation.not_current(usage, config.master_key_id),
    }
    emit(args, "\n".join(lines), data)
    return 0


def cmd_keys_rotate_master(args: argparse.Namespace) -> int:
    """Re-wrap every sealed secret under the new (current) master key; resumable."""
    if not 1 <= args.batch_rows <= BATCH_ROWS_MAX:
        raise CliError("invalid_argument", f"--batch-rows must be 1-{BATCH_ROWS_MAX}")
    if args.batches_max < 1:
        raise CliError("invalid_argument", "--batches-max must be at least 1")
    config = _config()
    if args.new_key_id != config.master_key_id:
        raise CliError(
            "master_key_not_current",
            f"PAYCODE_MASTER_KEY_ID is {config.master_key_id!r}, not {args.new_key_id[:16]!r}: "
            "configure the new key and make it current first (docs/operations.md)",
        )
    with _session(config) as session:
        report = rotation.rotate_master(
            session,
            SecretBox.from_config(config),
            batch_rows=args.batch_rows,
            batches_max=args.batches_max,
        )
    counts = " ".join(f"{table}={n}" for table, n in report.rewrapped.items())
    if not report.complete:
        left = " ".join(f"{table}={n}" for table, n in report.remaining.items())
        raise CliError(
            "rotation_incomplete",
            f"re-wrapped {counts}; still under older keys: {left}; run the command again",
        )
    human = (
        f"re-wrapped {counts} under {report.key_id}; no secret is sealed under another key. "
        "Remove the old key from the configuration once every server runs with "
        f"PAYCODE_MASTER_KEY_ID={report.key_id}."
    )
    emit(args, human, {"key_id": report.key_id, "rewrapped": report.rewrapped, "complete": True})
    return 0


# -- parser -------------------------------------------------------------------------------------

Subparsers = Any  # argparse's _SubParsersAction is private


def _add_server_commands(sub: Subparsers) -> None:
    sub.add_parser(
        "init-db", help="create or upgrade the database schema and server keys (idempotent)"
    ).set_defaults(func=cmd_init_db)
    run_parser = sub.add_parser("run", help="development server (Flask, threaded)")
    run_parser.add_argument("--host", default="127.0.0.1")
    run_parser.add_argument("--port", type=int, default=5000)
    run_parser.set_defaults(func=cmd_run)
    serve = sub.add_parser("serve", help="production server (gunicorn, sync workers)")
    serve.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    serve.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (default %(default)s)")
    serve.add_argument("--access-log", action="store_true", help="log every request to stdout")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="purge expired claims, nonces, sessions, idempotency")
    worker.add_argument("--once", action="store_true", help="one pass, then exit")
    worker.add_argument("--interval-s", type=float, default=60.0, help="seconds between passes")
    worker.add_argument("--iterations-max", type=int, default=None, help="stop after N passes")
    worker.set_defaults(func=cmd_worker)


def _add_admin_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    users = sub.add_parser("users", help="wallet users").add_subparsers(metavar="ACTION")
    create = users.add_parser("create", help="create a user and an empty account")
    create.add_argument("name")
    create.add_argument("--password-stdin", action="store_true", help="read one line as password")
    create.add_argument("--currency", default=DEFAULT_CURRENCY)
    create.set_defaults(func=cmd_users_create)
    top_up = users.add_parser("top-up", help="credit a user from the funding account")
    top_up.add_argument("name")
    top_up.add_argument("amount", help='decimal string, e.g. "100.00"')
    top_up.add_argument("--currency", default=None, help="default: the user's first account")
    top_up.set_defaults(func=cmd_users_top_up)
    merchants = sub.add_parser("merchants", help="merchants").add_subparsers(metavar="ACTION")
    merchant = merchants.add_parser("create", help="create a merchant and its account")
    merchant.add_argument("name")
    merchant.add_argument("--currency", default=DEFAULT_CURRENCY)
    merchant.add_argument("--notify-url", default=None)
    merchant.add_argument("--city", default=DEFAULT_CITY, help="city on its QR posters (<= 15)")
    merchant.add_argument("--country", default=DEFAULT_COUNTRY, help="ISO 3166 alpha-2 (CN)")
    merchant.add_argument(
        "--allow-ip",
        action="append",
        metavar="CIDR",
        help="only accept its terminals' requests from this network (repeatable; default any)",
    )
    merchant.set_defaults(func=cmd_merchants_create)
    terminals = sub.add_parser("terminals", help="POS terminal keys").add_subparsers(
        metavar="ACTION"
    )
    terminal = terminals.add_parser("create", help="create a terminal key (secret shown once)")
    terminal.add_argument("merchant", help="merchant id or name")
    terminal.set_defaults(func=cmd_terminals_create)
    devices = sub.add_parser("devices", help="enrolled devices").add_subparsers(metavar="ACTION")
    revoke = devices.add_parser("revoke", help="stop accepting a device's codes")
    revoke.add_argument("device_id")
    revoke.set_defaults(func=cmd_devices_revoke)
    return [create, top_up, merchant, terminal, revoke]


def _add_lifecycle_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    versions = sub.add_parser("versions", help="list code versions, or change one's lifecycle")
    versions.set_defaults(func=cmd_versions)
    actions = versions.add_subparsers(metavar="ACTION")
    leaves = []
    for action, status in VERSION_ACTIONS.items():
        leaf = actions.add_parser(action, help=f"mark a code version {status}")
        leaf.add_argument("version", help="v1, v2, v3, ...")
        leaf.set_defaults(func=cmd_versions_set, action=action)
        leaves.append(leaf)
    keys = sub.add_parser("keys", help="master keys").add_subparsers(metavar="ACTION")
    status = keys.add_parser("status", help="configured master keys and the rows each one seals")
    status.set_defaults(func=cmd_keys_status)
    rotate = keys.add_parser(
        "rotate-master", help="re-wrap every sealed secret under the new master key (resumable)"
    )
    rotate.add_argument("--new-key-id", required=True, help="must be PAYCODE_MASTER_KEY_ID")
    rotate.add_argument("--batch-rows", type=int, default=rotation.BATCH_ROWS, help="per commit")
    rotate.add_argument(
        "--batches-max", type=int, default=rotation.BATCHES_MAX, help="per table, then stop"
    )
    rotate.set_defaults(func=cmd_keys_rotate_master)
    return [*leaves, status, rotate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Paycode payment server (operator).")
    add_json_flag(parser)
    sub = parser.add_subparsers(metavar="COMMAND")
    _add_server_commands(sub)
    leaves = [*_add_admin_commands(sub), *_add_lifecycle_commands(sub)]
    for action in [*sub.choices.values(), *leaves]:
        add_json_flag(action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
