"""Settlement files and reconciliation over a live server, on SQLite and PostgreSQL.

One merchant's day is made for real (charges, a partial refund, a failed charge, a step-up
payment confirmed with the PIN, a declined one, a collection-QR payment), then moved in the
database onto a fixed day, with one payment pushed to the next day's first second. The CLI and
the signed API must produce the same CSV, whose totals equal the movement of the merchant's
ledger account in the window. Reconciliation passes on the healthy ledger and names each
mismatch once the test corrupts a balance or deletes a ledger entry.

The day is made once per backend on a live server (`paycode-server run` on SQLite, gunicorn
on PostgreSQL), whose signed API serves the file over real HTTP: the wire of this area. The
commands run the console script's main(argv) in this process
(tests.support.servers.run_cli_in_process); the unknown merchant runs `paycode-server` as a
process of its own, whose exit status is checked.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update

from paycode.client import online, pending
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.books.settlement import DayWindow, day_window
from paycode.server.books.settlement_csv import COLUMNS
from paycode.server.database.models import (
    Account,
    LedgerEntry,
    LedgerTransaction,
    Payment,
    Refund,
)
from paycode.server.safety.limits import LimitSettings
from paycode.shared import terminal_auth
from tests.support.servers import LiveServer, run_cli, run_cli_in_process
from tests.support.shop import (
    PASSWORD,
    Merchant,
    code_of,
    new_merchant,
    new_order,
    new_phone,
    new_user,
    ok_json,
    refused,
    use_fast_keystore,
)

PIN = "246810"
DAY = dt.date(2026, 1, 15)
NEXT_DAY = DAY + dt.timedelta(days=1)
SPACING_S = 60


@dataclass
class MerchantDay:
    """A merchant's day, already moved onto DAY (one payment onto NEXT_DAY)."""

    server: LiveServer
    merchant: Merchant
    account_id: int
    window: DayWindow
    paid: dict[str, str] = field(default_factory=dict)
    """label -> payment id."""
    refund_id: str = ""

    @property
    def till(self) -> TerminalClient:
        return self.merchant.till

    @property
    def merchant_id(self) -> str:
        return self.merchant.merchant_id


def _charge(day: MerchantDay, wallet: Any, label: str, amount: str, **extra: Any) -> dict[str, Any]:
    reply = day.till.charge(code=code_of(wallet, "v2"), amount=amount, currency="CNY", **extra)
    day.paid[label] = reply["payment_id"]
    return reply


def _collection_payload(till: TerminalClient, amount: str, reference: str) -> str:
    """A till's order, paid by a wallet scanning it: its order id is `reference`."""
    return str(new_order(till, amount, reference)["qr_payload"])


def _make_day(day: MerchantDay, home: Path) -> None:
    server = day.server
    name = new_user(server, "payer", top_up="1000.00")
    ok_json(server.cli_in_process("--json", "users", "limits", name, "--payment-max", "50.00"))
    ok_json(server.cli_in_process("--json", "users", "limits", name, "--daily-count", "20"))
    wallet = new_phone(server, home / name, name, ["v2"])
    pending.set_pin(wallet, password=PASSWORD, pin=PIN)
    poor = new_user(server, "poor", top_up="1.00")
    poor_wallet = new_phone(server, home / poor, poor, ["v2"])

    _charge(day, wallet, "first", "12.50", merchant_order_id="=A-1")
    _charge(day, wallet, "second", "7.25", merchant_order_id="A-2")
    day.refund_id = day.till.refund(day.paid["first"], amount="2.50")["refund_id"]
    poor_code = code_of(poor_wallet, "v2")
    refused(
        "insufficient_funds",
        lambda: day.till.charge(code=poor_code, amount="5.00", currency="CNY"),
    )
    waiting = _charge(day, wallet, "step_up", "80.00")
    assert waiting["status"] == "pending_confirmation"
    assert pending.confirm(wallet, waiting["payment_id"], PIN)["status"] == "succeeded"
    declined = _charge(day, wallet, "declined", "60.00")
    pending.decline(wallet, declined["payment_id"])
    paid = online.pay(wallet, qr_payload=_collection_payload(day.till, "4.00", "QR-1"), amount=None)
    day.paid["collection"] = paid["payment_id"]
    _charge(day, wallet, "next_day", "3.00")


def _move_onto_day(day: MerchantDay) -> None:
    """Every movement of the merchant onto DAY, a minute apart in their order; 'first' on the
    day's first second, 'next_day' on the next day's first second. Refund rows and payments
    move with their transactions (a refund row and its transaction share their time)."""
    start_s, end_s = day.window.start_s, day.window.end_s
    pinned = {day.paid["first"]: float(start_s), day.paid["next_day"]: float(end_s)}
    with day.server.session() as session:
        moves = session.execute(
            select(LedgerTransaction.id, LedgerTransaction.kind, LedgerTransaction.payment_id)
            .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
            .where(LedgerEntry.account_id == day.account_id)
            .order_by(LedgerTransaction.created_at_s)
        ).all()
        for index, (txn_id, kind, payment_id) in enumerate(moves):
            at_s = float(start_s + SPACING_S * (index + 1))
            if kind == "charge":
                at_s = pinned.get(payment_id, at_s)
                session.execute(
                    update(Payment).where(Payment.id == payment_id).values(created_at_s=at_s)
                )
            else:
                session.execute(
                    update(Refund).where(Refund.payment_id == payment_id).values(created_at_s=at_s)
                )
            session.execute(
                update(LedgerTransaction)
                .where(LedgerTransaction.id == txn_id)
                .values(created_at_s=at_s)
            )
        session.execute(  # the payments that moved nothing fall inside the day too
            update(Payment)
            .where(Payment.merchant_id == day.merchant_id, Payment.status != "succeeded")
            .values(created_at_s=float(start_s + 30))
        )


@pytest.fixture(scope="module")
def day(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MerchantDay]:
    with pytest.MonkeyPatch.context() as patch:
        use_fast_keystore(patch)
        merchant = new_merchant(live_server, "Cafe")
        with live_server.session() as session:
            account_id = session.scalar(
                select(Account.id).where(
                    Account.owner_kind == "merchant", Account.owner_id == merchant.merchant_id
                )
            )
        assert account_id is not None
        window = day_window(DAY, LimitSettings())
        made = MerchantDay(live_server, merchant, account_id, window)
        _make_day(made, tmp_path_factory.mktemp("settlement"))
        _move_onto_day(made)
        yield made


# -- helpers ----------------------------------------------------------------------------------


def _rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


def _movements(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row["record"] == "movement"]


def _total(rows: list[dict[str, str]]) -> dict[str, str]:
    totals = [row for row in rows if row["record"] == "total"]
    assert len(totals) == 1 and rows[-1] is totals[0]
    return totals[0]


def _ledger_movement_minor(day: MerchantDay, window: DayWindow) -> int:
    """The sum of the merchant account's entries whose transaction is in the window."""
    with day.server.session() as session:
        value = session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(
                LedgerEntry.account_id == day.account_id,
                LedgerTransaction.created_at_s >= window.start_s,
                LedgerTransaction.created_at_s < window.end_s,
            )
        )
    return int(value or 0)


def _signed_get(day: MerchantDay, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a terminal-signed GET."""
    headers = terminal_auth.sign_headers(
        day.till.key_id, day.till.secret, "GET", path, b"", timestamp_s=int(time.time())
    )
    request = urllib.request.Request(day.server.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get_content_type(), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read().decode()


def _settlement_cli(day: MerchantDay, *args: str, env: dict[str, str] | None = None) -> Any:
    """`paycode-server settlement`: its main(argv) in this process."""
    command = ("settlement", "--merchant", day.merchant.name, *args)
    return run_cli_in_process(day.server.env | (env or {}), *command)


def _reconcile(day: MerchantDay, *args: str) -> tuple[int, dict[str, Any]]:
    done = day.server.cli_in_process("--json", "reconcile", *args)
    return done.returncode, json.loads(done.stdout)


# -- the settlement file ----------------------------------------------------------------------


def test_cli_file_lists_the_days_movements_and_adds_up(day: MerchantDay, tmp_path: Path) -> None:
    out = tmp_path / "day.csv"
    reply = ok_json(_settlement_cli(day, "--date", DAY.isoformat(), "--out", str(out), "--json"))
    rows = _rows(out.read_text(encoding="utf-8"))
    movements = _movements(rows)
    by_payment = {(row["payment_id"], row["type"]): row for row in movements}
    paid = day.paid
    assert sorted(by_payment) == sorted(
        [
            (paid["first"], "charge"),
            (paid["second"], "charge"),
            (paid["first"], "refund"),
            (paid["step_up"], "charge"),
            (paid["collection"], "charge"),
        ]
    )
    first = by_payment[(paid["first"], "charge")]
    assert first["created_at"] == "2026-01-14T16:00:00Z"  # 00:00 UTC+8, the day's first second
    assert (first["amount"], first["amount_minor"], first["sign"]) == ("12.50", "1250", "credit")
    assert first["merchant_order_id"] == "'=A-1"  # a spreadsheet never runs it
    assert first["terminal_id"] == day.till.key_id and first["code_version"] == "v2"
    assert first["ledger_transaction_id"].startswith("txn_") and first["refund_id"] == ""
    refund = by_payment[(paid["first"], "refund")]
    assert refund["refund_id"] == day.refund_id
    assert (refund["amount"], refund["amount_minor"], refund["sign"]) == ("-2.50", "-250", "debit")
    assert by_payment[(paid["step_up"], "charge")]["amount"] == "80.00"
    collection = by_payment[(paid["collection"], "charge")]
    assert (collection["code_version"], collection["merchant_order_id"]) == ("mpm", "QR-1")
    assert all(row["fee_minor"] == "0" and row["date"] == DAY.isoformat() for row in rows)

    total = _total(rows)
    net_minor = sum(int(row["amount_minor"]) for row in movements)
    assert net_minor == 1250 + 725 - 250 + 8000 + 400
    assert net_minor == _ledger_movement_minor(day, day.window)
    assert (total["count"], total["amount_minor"], total["amount"]) == (
        "5",
        str(net_minor),
        "101.25",
    )
    assert reply["totals"] == [
        {
            "currency": "CNY",
            "count": 5,
            "net": "101.25",
            "net_minor": 10125,
            "fee": "0.00",
            "fee_minor": 0,
        }
    ]
    assert reply["out"] == str(out) and reply["lines"] == 5


def test_money_that_did_not_move_is_left_out(day: MerchantDay) -> None:
    with day.server.session() as session:
        unmoved = set(
            session.scalars(
                select(Payment.id).where(
                    Payment.merchant_id == day.merchant_id, Payment.status != "succeeded"
                )
            )
        )
        statuses = set(session.scalars(select(Payment.status).where(Payment.id.in_(unmoved))))
    assert statuses == {"failed", "declined"}
    done = _settlement_cli(day, "--date", DAY.isoformat())
    assert done.returncode == 0, done.stderr
    listed = {row["payment_id"] for row in _movements(_rows(done.stdout))}
    assert listed and not listed & unmoved
    assert day.paid["next_day"] not in listed


def test_a_movement_on_the_next_days_first_second_is_the_next_days(day: MerchantDay) -> None:
    done = _settlement_cli(day, "--date", NEXT_DAY.isoformat())
    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    assert [row["payment_id"] for row in _movements(rows)] == [day.paid["next_day"]]
    assert _total(rows)["amount_minor"] == "300"
    next_window = day_window(NEXT_DAY, LimitSettings())
    assert _ledger_movement_minor(day, next_window) == 300


def test_fees_are_reported_in_minor_units_and_never_moved(day: MerchantDay) -> None:
    with day.server.session() as session:
        before = session.scalar(select(Account.balance_minor).where(Account.id == day.account_id))
    done = _settlement_cli(day, "--date", DAY.isoformat(), env={"PAYCODE_FEE_BPS": "60"})
    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    fees = {(row["amount_minor"], row["type"]): int(row["fee_minor"]) for row in _movements(rows)}
    # 0.6 %, rounded half up: 7.5 -> 8, 4.35 -> 4, 48, 2.4 -> 2; a refund returns no fee.
    assert fees == {
        ("1250", "charge"): 8,
        ("725", "charge"): 4,
        ("8000", "charge"): 48,
        ("400", "charge"): 2,
        ("-250", "refund"): 0,
    }
    total = _total(rows)
    assert (total["fee"], total["fee_minor"], total["amount_minor"]) == ("0.62", "62", "10125")
    with day.server.session() as session:
        after = session.scalar(select(Account.balance_minor).where(Account.id == day.account_id))
    assert after == before
    bad = _settlement_cli(day, "--date", DAY.isoformat(), env={"PAYCODE_FEE_BPS": "1.5"})
    assert bad.returncode == 1 and "error [config_invalid]" in bad.stderr


def test_api_serves_the_same_file_as_the_cli(day: MerchantDay, tmp_path: Path) -> None:
    status, content_type, body = _signed_get(day, f"/v1/settlement?date={DAY.isoformat()}")
    assert (status, content_type) == (200, "text/csv"), body
    out = tmp_path / "cli.csv"
    done = _settlement_cli(day, "--date", DAY.isoformat(), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert body.encode() == out.read_bytes()  # byte for byte, CRLF line ends (RFC 4180)
    assert body.count("\r\n") == len(body.splitlines()) == 1 + 5 + 1


@pytest.mark.parametrize("date", ["2026-02-30", "2026-13-01", "yesterday", "2026-1-5", ""])
def test_a_bad_date_is_a_typed_error(day: MerchantDay, date: str) -> None:
    status, content_type, body = _signed_get(day, f"/v1/settlement?date={date}")
    assert (status, content_type) == (400, "application/problem+json")
    assert json.loads(body)["code"] == "date_invalid"
    done = _settlement_cli(day, "--date", date)
    assert done.returncode == 1 and "error [date_invalid]" in done.stderr
    assert done.stdout == ""
    as_json = json.loads(_settlement_cli(day, "--date", date, "--json").stdout)
    assert as_json["ok"] is False and as_json["error"]["code"] == "date_invalid"


def test_api_needs_a_signature_and_a_date(day: MerchantDay) -> None:
    missing, _, body = _signed_get(day, "/v1/settlement")
    assert missing == 400 and json.loads(body)["code"] == "date_invalid"
    request = urllib.request.Request(f"{day.server.url}/v1/settlement?date={DAY.isoformat()}")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["code"] == "unauthorized"


def test_unknown_merchant_is_not_found(day: MerchantDay) -> None:
    done = run_cli(
        day.server.env, "settlement", "--merchant", "No Such Shop", "--date", "2026-01-15"
    )
    assert done.returncode == 1 and "error [not_found]" in done.stderr


# -- reconciliation ---------------------------------------------------------------------------


def test_reconcile_passes_on_a_healthy_ledger(day: MerchantDay) -> None:
    code, reply = _reconcile(day)
    assert code == 0 and reply["ok"] is True, reply
    summary = reply["summary"]
    assert summary["mismatch_count"] == 0 and reply["mismatches"] == []
    assert summary["payments"] >= 7 and summary["refunds"] >= 1
    assert set(summary["sums_minor"].values()) == {0}
    paged_code, paged = _reconcile(day, "--batch-rows", "2")  # keyset pages of two rows
    assert paged_code == 0 and paged["summary"] == summary
    human = day.server.cli_in_process("reconcile")
    assert human.returncode == 0 and human.stdout.startswith("ledger reconciled:")


def test_reconcile_names_a_corrupted_balance(day: MerchantDay) -> None:
    with day.server.session() as session:
        session.execute(
            update(Account)
            .where(Account.id == day.account_id)
            .values(balance_minor=Account.balance_minor + 1)
        )
    try:
        code, reply = _reconcile(day)
        assert code == 1 and reply["ok"] is False
        assert reply["error"]["code"] == "ledger_mismatch"
        assert [(m["code"], m["subject"]) for m in reply["mismatches"]] == [
            ("balance_mismatch", f"account:{day.account_id}")
        ]
        human = day.server.cli_in_process("reconcile")
        assert human.returncode == 1
        assert f"mismatch [balance_mismatch] account:{day.account_id}" in human.stdout
        assert "error [ledger_mismatch]" in human.stderr
    finally:
        with day.server.session() as session:
            session.execute(
                update(Account)
                .where(Account.id == day.account_id)
                .values(balance_minor=Account.balance_minor - 1)
            )
    assert _reconcile(day)[0] == 0


def test_a_deleted_ledger_entry_fails_reconcile_and_the_settlement(day: MerchantDay) -> None:
    payment_id = day.paid["second"]
    with day.server.session() as session:
        entry = session.execute(
            select(
                LedgerEntry.id,
                LedgerEntry.transaction_id,
                LedgerEntry.account_id,
                LedgerEntry.amount_minor,
                LedgerEntry.currency,
            )
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(
                LedgerTransaction.payment_id == payment_id,
                LedgerEntry.account_id == day.account_id,
            )
        ).one()
        session.execute(delete(LedgerEntry).where(LedgerEntry.id == entry.id))
    try:
        code, reply = _reconcile(day)
        assert code == 1 and reply["error"]["code"] == "ledger_mismatch"
        named = {(m["code"], m["subject"]) for m in reply["mismatches"]}
        assert named == {
            ("ledger_not_zero", "CNY"),
            ("balance_mismatch", f"account:{day.account_id}"),
            ("transaction_unbalanced", entry.transaction_id),
            ("charge_mismatch", payment_id),
        }
        assert reply["summary"]["mismatch_count"] == 4
        done = _settlement_cli(day, "--date", DAY.isoformat(), "--json")
        assert done.returncode == 1
        assert json.loads(done.stdout)["error"]["code"] == "ledger_mismatch"
        status, _, body = _signed_get(day, f"/v1/settlement?date={DAY.isoformat()}")
        assert status == 409 and json.loads(body)["code"] == "ledger_mismatch"
    finally:
        with day.server.session() as session:
            session.execute(insert(LedgerEntry).values(**entry._asdict()))
    assert _reconcile(day)[0] == 0
