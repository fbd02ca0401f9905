"""`paycode-server` admin commands on SQLite and on PostgreSQL.

The commands run as their console script's main(argv) in this process (Server.cli_in_process:
a process each would cost about a second of start-up), against the database of a running
server; the database is then read with SQLAlchemy to check what they did (ledger, sealed
secrets, hashes). Most tests use the in-process server; the live servers (`paycode-server run`
on SQLite, gunicorn on PostgreSQL) stay for /healthz over HTTP, a secret looked for in a real
server's log, and a till whose worker cached its secret before `terminals revoke`.
`paycode-server` as a process of its own: test_help_as_a_console_script here, and the worker
and settlement tests (tests/server/test_notifications.py, test_settlement.py).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server import cli
from paycode.server.books.ledger import ledger_sum_minor
from paycode.server.database import migrate
from paycode.server.database.engine import make_engine
from paycode.server.database.migrate import head_revision
from paycode.server.database.models import (
    SYSTEM,
    Account,
    Claim,
    Device,
    FailureCounter,
    IdempotencyRecord,
    LedgerEntry,
    LedgerTransaction,
    Merchant,
    Notification,
    Payment,
    RequestNonce,
    ServerKey,
    Terminal,
    User,
    WalletSession,
    new_id,
)
from paycode.server.database.online_models import OnlineCode
from paycode.server.notifications import delivery
from paycode.server.operations import admin, purge
from paycode.server.safety.guard import GuardSettings
from paycode.server.safety.passwords import hash_password, verify_password
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.errors import AmountInvalid, ApiError, ServerRejected
from tests.support.servers import LiveServer, Server, run_cli, run_cli_in_process, server_env

PASSWORD = "correct horse 42"
SUBCOMMANDS = [
    ["init-db"],
    ["run"],
    ["serve"],
    ["worker"],
    ["versions"],
    ["versions", "deprecate"],
    ["versions", "retire"],
    ["versions", "activate"],
    ["keys"],
    ["keys", "status"],
    ["keys", "rotate-master"],
    ["users"],
    ["users", "create"],
    ["users", "top-up"],
    ["merchants"],
    ["merchants", "create"],
    ["merchants", "notify-secret"],
    ["notifications"],
    ["notifications", "list"],
    ["notifications", "retry"],
    ["terminals"],
    ["terminals", "create"],
    ["terminals", "revoke"],
    ["terminals", "list"],
    ["devices"],
    ["devices", "revoke"],
]


def unique(prefix: str) -> str:
    """Tests share one database per backend and module: every name they create is fresh."""
    return f"{prefix}_{secrets.token_hex(4)}"


def assert_error(result: subprocess.CompletedProcess[str], code: str) -> None:
    """A failed command: exit 1, the stable code named, and no traceback anywhere."""
    assert result.returncode == 1, result
    assert f"error [{code}]" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def ok_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["ok"] is True
    return data


def in_turn(server: Server, *commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands, one after the other, in this process."""
    return [server.cli_in_process(*args) for args in commands]


def seed_user(server: Server, name: str) -> str:
    """A user made in-process, for tests whose subject is another command; returns its id."""
    with server.session() as session:
        return admin.create_user(session, name, PASSWORD, "CNY").id


def user_account(session: Session, name: str) -> Account:
    user = session.scalars(select(User).where(User.name == name)).one()
    return session.scalars(
        select(Account).where(Account.owner_kind == "user", Account.owner_id == user.id)
    ).one()


# -- on both backends ---------------------------------------------------------------------------


def test_server_answers_over_http(live_server: LiveServer) -> None:
    with urllib.request.urlopen(f"{live_server.url}/healthz", timeout=5) as response:
        assert json.load(response)["status"] == "ok"


def test_init_db_twice_is_fine(server: Server) -> None:
    data = ok_json(server.cli_in_process("init-db", "--json"))  # the harness ran it once already
    assert data["revision"] == head_revision() == "0014"  # points mandates (docs/spec.md §16)
    with server.session() as session:
        purposes = sorted(session.scalars(select(ServerKey.purpose)))
    assert purposes == ["hiding:v1", "hiding:v2", "offline", "qr", "seal"]  # no second set of keys


def test_a_one_character_account_password_is_refused(server: Server) -> None:
    """Account passwords had no minimum (1 character accepted) while dashboard passwords
    needed 10: one policy now, stated in --help."""
    name = unique("shortpw")
    for weak in ("x", "123456789"):
        done = server.cli_in_process("users", "create", name, "--password-stdin", stdin=weak + "\n")
        assert_error(done, "password_invalid")
        assert "at least 10 characters" in done.stderr
    helped = server.cli_in_process("users", "create", "--help")
    assert "a password has 10 to 1024 characters" in helped.stdout.replace("\n", " ")


def test_users_create_then_duplicate(server: Server) -> None:
    name = unique("alice")
    result = server.cli_in_process(
        "users", "create", name, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert name in result.stdout and "CNY" in result.stdout
    again = server.cli_in_process(
        "users", "create", name, "--password-stdin", stdin="another password\n"
    )
    assert_error(again, "user_exists")
    with server.session() as session:
        user = session.scalars(select(User).where(User.name == name)).one()
        assert user_account(session, name).balance_minor == 0
    assert user.password_hash.startswith("scrypt$16384$8$1$")
    assert PASSWORD not in user.password_hash
    assert verify_password(PASSWORD, user.password_hash)  # the newline was not part of it
    assert not verify_password("other", user.password_hash)  # the duplicate changed nothing


def test_top_up_moves_money_through_the_ledger(server: Server) -> None:
    name = unique("bob")
    seed_user(server, name)
    first = ok_json(server.cli_in_process("--json", "users", "top-up", name, "100.5"))
    assert (first["amount"], first["balance"], first["balance_minor"]) == (
        "100.50",
        "100.50",
        10050,
    )
    second = server.cli_in_process("users", "top-up", name, "0.50")
    assert second.returncode == 0 and "balance 101.00 CNY" in second.stdout
    with server.session() as session:
        account = user_account(session, name)
        funding = session.scalars(select(Account).where(Account.owner_kind == SYSTEM)).one()
        user_total = session.scalar(
            select(func.sum(Account.balance_minor)).where(Account.owner_kind != SYSTEM)
        )
        entries = session.scalars(
            select(LedgerEntry).where(LedgerEntry.account_id == account.id)
        ).all()
        kinds = set(
            session.scalars(
                select(LedgerTransaction.kind).where(
                    LedgerTransaction.id.in_([entry.transaction_id for entry in entries])
                )
            )
        )
        assert ledger_sum_minor(session) == 0
    assert account.balance_minor == 10100
    assert sorted(entry.amount_minor for entry in entries) == [50, 10050]
    assert kinds == {"top_up"}
    assert user_total is not None and funding.balance_minor == -user_total < 0


def test_bad_amounts_and_unknown_users_move_nothing(server: Server) -> None:
    name = unique("carol")
    seed_user(server, name)
    too_precise, unknown = in_turn(
        server,
        ["--json", "users", "top-up", name, "1.234"],
        ["users", "top-up", unique("nobody"), "1"],
    )
    assert too_precise.returncode == 1 and "Traceback" not in too_precise.stderr
    assert json.loads(too_precise.stdout)["error"]["code"] == "amount_invalid"
    assert_error(unknown, "not_found")
    with server.session() as session:
        for text in ("0", "-5", "1e3", "", "9" * 40):
            with pytest.raises(AmountInvalid):
                admin.top_up(session, name, text, time.time())
        assert user_account(session, name).balance_minor == 0


def test_merchants_create(server: Server) -> None:
    name = unique("Corner Cafe")
    url = "https://merchant.example/notify"
    data = ok_json(
        server.cli_in_process("--json", "merchants", "create", name, "--notify-url", url)
    )
    merchant = data["merchant"]
    assert (merchant["name"], merchant["currency"], merchant["notify_url"]) == (name, "CNY", url)
    assert_error(server.cli_in_process("merchants", "create", name), "merchant_exists")
    with server.session() as session:
        row = session.get(Merchant, merchant["id"])
        assert row is not None
        account = session.scalars(
            select(Account).where(Account.owner_kind == "merchant", Account.owner_id == row.id)
        ).one()
    assert row.name == name and account.currency == "CNY"


def test_terminal_secret_is_shown_once_and_stored_sealed(live_server: LiveServer) -> None:
    merchant = unique("Shop")
    with live_server.session() as session:
        admin.create_merchant(session, merchant, "USD")
    created = ok_json(live_server.cli_in_process("--json", "terminals", "create", merchant))
    key_id, secret_b64 = created["key_id"], created["secret"]
    secret = base64.b64decode(secret_b64, validate=True)
    assert key_id.startswith("term_") and len(secret) == 32
    later = in_turn(
        live_server, ["terminals", "create", merchant], ["terminals", "create", unique("missing")]
    )
    assert later[0].returncode == 0 and "not shown again" in later[0].stdout
    assert key_id not in later[0].stdout  # a second terminal, with its own key
    assert_error(later[-1], "not_found")
    for output in [*(r.stdout + r.stderr for r in later), live_server.log()]:
        assert secret_b64 not in output
    with live_server.session() as session:
        terminal = session.get(Terminal, key_id)
        assert terminal is not None
    assert secret not in terminal.secret_sealed
    assert secret_b64.encode() not in terminal.secret_sealed
    box = SecretBox({"mk1": base64.b64decode(live_server.env["PAYCODE_MASTER_KEY"])}, "mk1")
    assert box.open(terminal.key_id, terminal.secret_sealed, row_id=key_id) == secret


def test_terminals_revoke_cuts_off_a_till_at_once(live_server: LiveServer) -> None:
    """A stolen till: after `terminals revoke` its signed requests answer 401 on the worker
    that has its secret cached, a garbage charge included, and `terminals list` says so."""
    merchant = unique("Kiosk")
    with live_server.session() as session:
        admin.create_merchant(session, merchant, "CNY")
    created = ok_json(live_server.cli_in_process("--json", "terminals", "create", merchant))
    till = TerminalClient(live_server.url, created["key_id"], base64.b64decode(created["secret"]))
    assert till.merchant()["name"] == merchant
    with pytest.raises(ServerRejected) as refused:  # caches the secret, moves nothing
        till.charge(code="not a code", amount="1.00", currency="CNY")
    assert refused.value.code == "code_malformed"
    first = ok_json(live_server.cli_in_process("--json", "terminals", "revoke", created["key_id"]))
    assert first["revoked"] is True and first["key_id"] == created["key_id"]
    for call in (
        till.merchant,
        lambda: till.charge(code="not a code", amount="1.00", currency="CNY"),
    ):
        with pytest.raises(ServerRejected) as refused:
            call()
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    again, unknown = in_turn(
        live_server,
        ["--json", "terminals", "revoke", created["key_id"]],
        ["terminals", "revoke", unique("term")],
    )
    assert json.loads(again.stdout)["revoked_at"] == first["revoked_at"]  # the first time stays
    assert_error(unknown, "not_found")
    spare = ok_json(live_server.cli_in_process("--json", "terminals", "create", merchant))
    listed = ok_json(live_server.cli_in_process("--json", "terminals", "list", merchant))[
        "terminals"
    ]
    assert [(row["key_id"], row["revoked"]) for row in listed] == [
        (spare["key_id"], False),
        (created["key_id"], True),
    ]
    assert created["secret"] not in json.dumps(listed) + again.stdout + live_server.log()


def test_worker_once_purges_expired_rows(server: Server) -> None:
    user_id = seed_user(server, unique("dave"))
    now_s = time.time()
    stale, fresh = unique("claim-stale"), unique("claim-fresh")
    nonce_scope, token = unique("terminal:t"), secrets.token_hex(16)
    quiet_scope, live_scope = unique("ip:quiet"), unique("ip:live")
    with server.session() as session:
        session.add_all(
            [
                Claim(claim_key=stale, device_id="dev_x", expires_at_s=now_s - 1),
                Claim(claim_key=fresh, device_id="dev_x", expires_at_s=now_s + 600),
                RequestNonce(scope=nonce_scope, nonce="n" * 32, expires_at_s=now_s - 1),
                WalletSession(token_hash=token, user_id=user_id, expires_at_s=now_s - 1),
                IdempotencyRecord(
                    scope=nonce_scope,
                    key="k1",
                    request_hash="h",
                    status_code=201,
                    response_body="{}",
                    created_at_s=now_s - 2 * 86400,
                ),
                FailureCounter(  # quiet for longer than the default back-off maximum
                    scope=quiet_scope,
                    window_start_s=now_s - 2 * 86400,
                    failures=3,
                    strikes=1,
                    blocked_until_s=now_s - 86400,
                ),
                FailureCounter(  # still inside its window
                    scope=live_scope, window_start_s=now_s, failures=1, strikes=0
                ),
                OnlineCode(  # a code issued online past its life (docs/spec.md §14)
                    issuer_id=unique("dev"), step=1, counter=0, issued_at_s=30.0, expires_at_s=90.0
                ),
            ]
        )
    late, waiting = _pending_payments(server, user_id, now_s)
    purged = ok_json(server.cli_in_process("--json", "worker", "--once"))["purged"]
    assert min(purged.values()) >= 1, purged
    with server.session() as session:
        expired, still = session.get(Payment, late), session.get(Payment, waiting)
        assert expired is not None and still is not None
        assert (expired.status, expired.failure_code) == ("cancelled", "confirmation_expired")
        assert (still.status, still.failure_code) == ("pending_confirmation", None)
    with server.session() as session:
        assert session.get(Claim, stale) is None
        assert session.get(Claim, fresh) is not None
        assert session.get(RequestNonce, (nonce_scope, "n" * 32)) is None
        assert session.get(WalletSession, token) is None
        assert session.get(IdempotencyRecord, (nonce_scope, "k1")) is None
        assert session.get(FailureCounter, quiet_scope) is None
        assert session.get(FailureCounter, live_scope) is not None


def test_devices_revoke(server: Server) -> None:
    user_id = seed_user(server, unique("erin"))
    device_id = unique("dev")
    with server.session() as session:
        session.add(
            Device(
                id=device_id,
                user_id=user_id,
                version="v1",
                handle=os.urandom(16),
                drift_steps=0,
                label="test",
                created_at_s=time.time(),
            )
        )
    first = ok_json(server.cli_in_process("--json", "devices", "revoke", device_id))
    assert first["revoked"] is True
    second, unknown = in_turn(
        server, ["devices", "revoke", device_id], ["devices", "revoke", unique("dev")]
    )
    assert second.returncode == 0 and "already revoked" in second.stdout
    assert_error(unknown, "not_found")
    with server.session() as session:
        device = session.get(Device, device_id)
    assert device is not None and device.revoked_at_s is not None


@pytest.mark.postgres
def test_init_db_hides_the_database_password(app_postgres: Server) -> None:
    """PostgreSQL here trusts every local login, so a URL with a password still connects."""
    url = app_postgres.database_url.replace("postgres@", "postgres:hunter2secret@")
    env = {**app_postgres.env, "PAYCODE_DATABASE_URL": url}
    result = run_cli_in_process(env, "init-db")
    assert result.returncode == 0, result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr
    assert "***" in result.stdout


# -- no server needed ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_help_of_every_subcommand(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"])
    assert exited.value.code == 0
    assert "usage: paycode-server" in capsys.readouterr().out


def test_help_as_a_console_script() -> None:
    result = run_cli(dict(os.environ), "terminals", "create", "--help")
    assert result.returncode == 0 and "MERCHANT" in result.stdout.upper()


def test_master_key_file_is_created_0600(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    env = server_env(instance, f"sqlite:///{instance / 'paycode.db'}")
    del env["PAYCODE_MASTER_KEY"]
    for _ in range(2):  # the second run reads the file the first one wrote
        result = run_cli_in_process(env, "init-db")
        assert result.returncode == 0, result.stderr
    key_file = instance / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_bytes().strip())) == 32


def test_errors_before_any_database_work_have_codes(tmp_path: Path) -> None:
    """Input and configuration errors need no server: each command in this process."""
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'paycode.db'}")
    assert run_cli_in_process(env, "init-db").returncode == 0  # else: no bank there
    runs = [
        (env, ["users", "create", "nopw"], "password_required"),  # stdin is /dev/null
        (env, ["users", "create", "has space", "--password-stdin"], "name_invalid"),
        (env, ["merchants", "create", "M", "--notify-url", "ftp://x"], "notify_url_invalid"),
        (env, ["worker", "--interval-s", "0"], "invalid_argument"),
        (
            {**env, "PAYCODE_DATABASE_URL": "nosuchdb://x"},
            ["users", "top-up", "x", "1"],
            "config_invalid",
        ),
        (
            {**env, "PAYCODE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"},
            ["users", "top-up", "x", "1"],
            "database_error",
        ),
    ]
    results = [run_cli_in_process(env_of_run, *args) for env_of_run, args, _code in runs]
    for result, (_env, _args, code) in zip(results, runs, strict=True):
        assert_error(result, code)


def test_password_hashes() -> None:
    stored = hash_password("pässword")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert hash_password("pässword") != stored  # salted
    assert verify_password("pässword", stored)
    assert not verify_password("password", stored)
    malformed = [
        "",
        "scrypt",
        stored.replace("scrypt$", "bcrypt$"),
        stored.replace("$16384$", "$16383$"),  # not a power of two
        stored.replace("$16384$", "$1073741824$"),  # would take gigabytes
        stored.replace("$8$", "$x$"),
        stored[:-4] + "!!!!",
        stored + "$extra",
        "x" * 10_000,
    ]
    for value in malformed:
        assert verify_password("pässword", value) is False


def _migrated_session(tmp_path: Path) -> Session:
    url = f"sqlite:///{tmp_path / 'unit.db'}"
    migrate.upgrade(url)
    return Session(make_engine(url), expire_on_commit=False)


def test_purge_works_in_bounded_batches(tmp_path: Path) -> None:
    with _migrated_session(tmp_path) as session:
        session.add_all(
            Claim(claim_key=f"c{i}", device_id="d", expires_at_s=float(i)) for i in range(25)
        )
        session.commit()
        first = purge.purge_expired(session, 100.0, batch_rows=10, batches_max=2)
        second = purge.purge_expired(session, 100.0, batch_rows=10, batches_max=2)
        assert (first["claims"], second["claims"]) == (20, 5)
        assert session.scalar(select(func.count()).select_from(Claim)) == 0


def test_delivered_notifications_are_purged_after_their_keep_time(tmp_path: Path) -> None:
    now_s = 100 * 86_400.0
    kept_s = delivery.DELIVERED_KEPT_S
    delivered_at = {"old": now_s - kept_s - 1, "recent": now_s - kept_s + 60, "due": None}
    with _migrated_session(tmp_path) as session:
        session.add_all(
            Notification(
                event_id=f"evt_{name}",
                merchant_id="mer_x",
                payment_id="pay_x",
                event_type="payment.succeeded",
                payload="{}",
                created_at_s=now_s - kept_s - 100,
                delivered_at_s=at,
            )
            for name, at in delivered_at.items()
        )
        session.commit()
        purged = delivery.purge_delivered(session, now_s)
        kept = set(session.scalars(select(Notification.event_id)))
    assert purged == 1
    assert kept == {"evt_recent", "evt_due"}  # an undelivered row is never purged


def test_purge_drops_only_guard_counters_that_have_gone_quiet(tmp_path: Path) -> None:
    """A quiet counter is one whose next failure would start afresh anyway (strikes 0): so
    purging it changes nothing but the table's size. Blocks and back-off memory stay."""
    guard = GuardSettings(window_s=300.0, backoff_max_s=3600.0)
    now_s = 100_000.0
    rows = {
        "quiet": (now_s - 4000.0, 3, 2, now_s - 3601.0),  # block ended over backoff_max ago
        "never-blocked": (now_s - 301.0, 5, 0, None),
        "in-window": (now_s - 10.0, 5, 0, None),
        "blocked": (now_s - 1000.0, 0, 1, now_s + 50.0),
        "remembers-strikes": (now_s - 1000.0, 0, 3, now_s - 600.0),  # back-off still grows
    }
    with _migrated_session(tmp_path) as session:
        session.add_all(
            FailureCounter(
                scope=f"terminal:{name}",
                window_start_s=start,
                failures=failures,
                strikes=strikes,
                blocked_until_s=until,
            )
            for name, (start, failures, strikes, until) in rows.items()
        )
        session.commit()
        purged = purge.purge_expired(session, now_s, guard=guard)
        kept = set(session.scalars(select(FailureCounter.scope)))
    assert purged["failure_counters"] == 2
    assert kept == {"terminal:in-window", "terminal:blocked", "terminal:remembers-strikes"}


def test_admin_services_refuse_bad_input(tmp_path: Path) -> None:
    with _migrated_session(tmp_path) as session:
        cases: list[tuple[Callable[[], object], str]] = [
            (lambda: admin.create_user(session, "a" * 65, PASSWORD, "CNY"), "name_invalid"),
            (lambda: admin.create_user(session, "bob", PASSWORD, "XXX"), "currency_unknown"),
            (lambda: admin.create_user(session, "bob", "", "CNY"), "password_invalid"),
            (lambda: admin.create_user(session, "bob", "x", "CNY"), "password_invalid"),
            (lambda: admin.create_user(session, "bob", "9 chars..", "CNY"), "password_invalid"),
            (lambda: admin.create_merchant(session, " Cafe", "CNY"), "name_invalid"),
            (lambda: admin.top_up(session, "nobody", "1", 0.0), "not_found"),
            (lambda: admin.revoke_device(session, "dev_none", 0.0), "not_found"),
        ]
        for call, code in cases:
            with pytest.raises(ApiError) as raised:
                call()
            assert raised.value.code == code
        user = admin.create_user(session, "bob", PASSWORD, "156")  # numeric ISO code accepted
        assert admin.default_currency(session, user.name) == "CNY"
        assert admin.top_up(session, "bob", "5", 1.0, currency="JPY") == 5  # a second currency
        session.commit()


def _pending_payments(server: Server, user_id: str, now_s: float) -> tuple[str, str]:
    """Two payments waiting for the customer's PIN: one past its deadline, one not."""
    merchant_id = new_id("mer")
    ids = (new_id("pay"), new_id("pay"))
    with server.session() as session:
        session.add(
            Merchant(
                id=merchant_id, name=unique("Pending Shop"), currency="CNY", created_at_s=now_s
            )
        )
        session.flush()
        for payment_id, confirm_by_s in zip(ids, (now_s - 1, now_s + 600), strict=True):
            session.add(
                Payment(
                    id=payment_id,
                    merchant_id=merchant_id,
                    user_id=user_id,
                    amount_minor=100,
                    currency="CNY",
                    refunded_minor=0,
                    status="pending_confirmation",
                    created_at_s=now_s - 60,
                    confirm_by_s=confirm_by_s,
                )
            )
    return ids


def test_a_command_from_another_folder_finds_the_same_bank_or_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue: the default instance was ./instance, so a command run from another folder
    silently made a new, empty bank there (a master key and an SQLite file)."""
    data_home = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env |= {"XDG_DATA_HOME": str(data_home), "HOME": str(tmp_path)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    refused = run_cli_in_process(env, "users", "top-up", "alice", "1.00")
    assert_error(refused, "config_invalid")
    assert "no bank at" in refused.stderr and "init-db" in refused.stderr
    assert not (data_home / "paycode").exists() and list(elsewhere.iterdir()) == []
    made = run_cli_in_process(env, "init-db")
    assert made.returncode == 0, made.stderr
    assert f"instance folder {data_home / 'paycode'}" in made.stdout
    monkeypatch.chdir(tmp_path)  # another folder: the same bank
    created = run_cli_in_process(
        env, "users", "create", "alice", "--password-stdin", stdin="alice password\n"
    )
    assert created.returncode == 0, created.stderr
    assert (data_home / "paycode" / "paycode.db").exists() and list(elsewhere.iterdir()) == []
