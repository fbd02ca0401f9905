"""The merchant dashboard on SQLite and PostgreSQL: log-in and its throttle, the day's figures
against the payments really made, refunds through the real ledger (CSRF, double submission,
another merchant's payment), the settlement download, log-out, and the operator's
`merchants set-password` command.

The pages are fetched with urllib and its cookie jar (tests.support.dashboard.Browser) from the
app in this process; the log-in, its cookie and log-out go over real HTTP to a live server
(`paycode-server run` on SQLite, gunicorn on PostgreSQL)."""

from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from paycode.server.dashboard import access
from paycode.server.database.models import LedgerEntry, MerchantSession, Payment, Refund
from paycode.shared.errors import ServerRejected
from tests.support.dashboard import DASHBOARD_PASSWORD, Browser, dashboard_merchant
from tests.support.servers import Server
from tests.support.shop import charge, code_of, new_phone, new_user, use_fast_keystore


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _payment(server: Server, payment_id: str) -> Payment:
    with server.session() as session:
        payment = session.get(Payment, payment_id)
        assert payment is not None
        return payment


def _refund_count(server: Server, payment_id: str) -> int:
    with server.session() as session:
        return session.scalar(
            select(func.count()).select_from(Refund).where(Refund.payment_id == payment_id)
        )


def _ledger_sum(server: Server) -> int:
    with server.session() as session:
        return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))))


def _refund_form(page_body: str, payment_id: str) -> dict[str, str]:
    """The refund form of one row, as the page rendered it."""
    row = re.search(rf'<tr id="{payment_id}".*?</tr>', page_body, re.S)
    assert row is not None, f"{payment_id} is not listed"
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', row.group(0)))
    assert set(fields) == {"csrf", "refunded_seen_minor", "amount"}, fields
    return fields


def test_a_merchant_sees_its_day_and_refunds_once(server: Server, tmp_path: Path) -> None:
    shop = dashboard_merchant(server)
    user = new_user(server, top_up="20.00")
    wallet = new_phone(server, tmp_path, user, ["v1"])
    paid = charge(shop.till, code_of(wallet, "v1"), "12.50")
    charge(shop.till, code_of(wallet, "v1"), "2.25")
    with pytest.raises(ServerRejected):  # 5.25 left: a recorded failure, not a payment
        charge(shop.till, code_of(wallet, "v1"), "9.00")

    browser = Browser(server)
    assert browser.get("/dashboard/").headers["Location"].endswith("/dashboard/login")
    page = browser.follow(browser.log_in(shop.name))
    assert page.status == 200
    assert 'id="volume-CNY">14.75<' in page.body
    assert 'id="paid-count">2<' in page.body
    assert "of 3 attempts" in page.body
    hours = [int(n) for n in re.findall(r'data-count="(\d+)"', page.body)]
    assert len(hours) == 24 and sum(hours) == 3 and max(hours) >= 1
    outcomes = dict(
        re.findall(r'<th scope="row">([a-z ]+)</th>\s*<td class="count">(\d+)<', page.body)
    )
    assert outcomes == {"succeeded": "2", "insufficient funds": "1"}
    assert page.body.index(paid["payment_id"]) > 0

    money_before = _ledger_sum(server)
    form = _refund_form(page.body, paid["payment_id"])
    assert form["amount"] == "12.50" and form["refunded_seen_minor"] == "0"
    done = browser.post(
        f"/dashboard/payments/{paid['payment_id']}/refund", form | {"amount": "2.50"}
    )
    assert done.status == 303
    after = browser.follow(done)
    assert f"Refund recorded for {paid['payment_id']}" in after.body
    assert _payment(server, paid["payment_id"]).refunded_minor == 250
    assert _refund_form(after.body, paid["payment_id"])["amount"] == "10.00"

    # The same form again (a double click, a reload): it saw 0 refunded, so nothing moves.
    again = browser.post(
        f"/dashboard/payments/{paid['payment_id']}/refund", form | {"amount": "2.50"}
    )
    assert again.status == 409
    assert "refunded meanwhile" in html.unescape(again.body)
    assert _payment(server, paid["payment_id"]).refunded_minor == 250
    assert _refund_count(server, paid["payment_id"]) == 1
    assert _ledger_sum(server) == money_before == 0


def test_refund_mistakes_move_no_money(server: Server, tmp_path: Path) -> None:
    shop, other = dashboard_merchant(server), dashboard_merchant(server, "Other")
    user = new_user(server, top_up="20.00")
    wallet = new_phone(server, tmp_path, user, ["v1"])
    paid = charge(shop.till, code_of(wallet, "v1"), "3.00")
    theirs = charge(other.till, code_of(wallet, "v1"), "4.00")
    browser = Browser(server)
    page = browser.follow(browser.log_in(shop.name))
    form = _refund_form(page.body, paid["payment_id"])
    path = f"/dashboard/payments/{paid['payment_id']}/refund"

    cases = [
        (path, form | {"csrf": "0" * 64}, 403, "the form expired"),
        (path, {k: v for k, v in form.items() if k != "csrf"}, 403, "the form expired"),
        (path, form | {"amount": "3.01"}, 422, "at most 3.00 can be refunded"),
        (path, form | {"amount": "-1"}, 400, "amount"),
        (path, form | {"amount": "1.234"}, 400, "amount"),
        (path, form | {"refunded_seen_minor": "x"}, 400, "reload the page"),
        (f"/dashboard/payments/{theirs['payment_id']}/refund", form, 404, "no such payment"),
        ("/dashboard/payments/pay_nothing/refund", form, 404, "no such payment"),
    ]
    for target, fields, status, words in cases:
        answer = browser.post(target, fields)
        assert answer.status == status, (fields, answer.status)
        assert words in html.unescape(answer.body), (fields, answer.body[-800:])
        assert "Traceback" not in answer.body
    assert _payment(server, paid["payment_id"]).refunded_minor == 0
    assert _payment(server, theirs["payment_id"]).refunded_minor == 0

    stranger = Browser(server)  # no session at all: back to the log-in page
    refused = stranger.post(path, form)
    assert refused.status == 302 and refused.headers["Location"].endswith("/dashboard/login")
    assert _refund_count(server, paid["payment_id"]) == 0


def test_settlement_download_matches_the_day(server: Server, tmp_path: Path) -> None:
    shop = dashboard_merchant(server)
    user = new_user(server, top_up="20.00")
    wallet = new_phone(server, tmp_path, user, ["v2"])
    paid = charge(shop.till, code_of(wallet, "v2"), "6.00")
    browser = Browser(server)
    page = browser.follow(browser.log_in(shop.name))
    browser.post(
        f"/dashboard/payments/{paid['payment_id']}/refund",
        _refund_form(page.body, paid["payment_id"]) | {"amount": "1.00"},
    )
    day = re.search(r'name="date" value="(\d{4}-\d\d-\d\d)"', page.body)
    assert day is not None
    csv_page = browser.get(f"/dashboard/settlement.csv?date={day.group(1)}")
    assert csv_page.status == 200
    assert csv_page.headers["Content-Type"].startswith("text/csv")
    assert (
        f"settlement-{shop.merchant_id}-{day.group(1)}.csv"
        in csv_page.headers["Content-Disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(csv_page.body)))
    kinds = [(row["type"], row["payment_id"], row["amount_minor"]) for row in rows]
    assert ("charge", paid["payment_id"], "600") in kinds
    assert ("refund", paid["payment_id"], "-100") in kinds
    totals = [(row["sign"], row["amount_minor"]) for row in rows if row["record"] == "total"]
    assert totals == [("credit", "500")]

    bad = browser.get("/dashboard/settlement.csv?date=2026-02-30")
    assert bad.status == 400 and "not a calendar date" in bad.body


def test_log_in_log_out_and_the_throttle(live_server: Server) -> None:
    shop = dashboard_merchant(live_server)
    browser = Browser(live_server)
    wrong = browser.log_in(shop.name, "not the password")
    assert wrong.status == 401 and "wrong merchant name or password" in wrong.body
    assert browser.log_in("no such shop").status == 401
    assert browser.session_cookie() is None

    answer = browser.log_in(shop.name)
    cookie = browser.session_cookie()
    assert answer.status == 302 and cookie is not None
    set_cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "Path=/dashboard" in set_cookie
    page = browser.follow(answer)
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert DASHBOARD_PASSWORD not in page.body and (cookie.value or "") not in page.body

    out = browser.post("/dashboard/logout", {"csrf": page.csrf()})
    assert out.status == 302 and browser.session_cookie() is None
    with live_server.session() as session:  # the session row is gone, not just the cookie
        assert (
            session.scalar(
                select(func.count())
                .select_from(MerchantSession)
                .where(MerchantSession.merchant_id == shop.merchant_id)
            )
            == 0
        )

    for _ in range(access.LOGIN_FAILURES_MAX - 1):  # the first wrong one counted too
        assert browser.log_in(shop.name, "guess").status == 401
    blocked = browser.log_in(shop.name)  # now even the right password waits
    assert blocked.status == 429 and "too many wrong passwords" in blocked.body
    assert browser.session_cookie() is None


def test_set_password_command(server: Server) -> None:
    shop = dashboard_merchant(server)
    browser = Browser(server)
    page = browser.follow(browser.log_in(shop.name))
    assert page.status == 200

    short = server.cli_in_process(
        "--json", "merchants", "set-password", shop.name, "--password-stdin", stdin="short\n"
    )
    assert short.returncode != 0 and "password_invalid" in short.stdout
    done = server.cli_in_process(
        "merchants", "set-password", shop.name, "--password-stdin", stdin="a brand new password\n"
    )
    assert done.returncode == 0, done.stderr
    assert "a brand new password" not in done.stdout + done.stderr
    # A new password ends the open session, and only the new one opens a new one.
    assert browser.get("/dashboard/").status == 302
    assert browser.log_in(shop.name).status == 401
    assert browser.log_in(shop.name, "a brand new password").status == 302

    closed = server.cli_in_process("merchants", "set-password", shop.merchant_id, "--close")
    assert closed.returncode == 0, closed.stderr
    assert browser.get("/dashboard/").status == 302
    assert browser.log_in(shop.name, "a brand new password").status == 401
