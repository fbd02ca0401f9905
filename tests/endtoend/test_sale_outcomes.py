"""No silent outcome (issue 20, part 2): every way a sale at the till ends prints its outcome and
its order id, and the `--json` object carries `outcome` and `order_id` (docs/pos.md "How a sale
ends"). Each test runs `paycode-pos charge` as a process of its own against a live server (on
SQLite and on PostgreSQL), sends it real signals, and puts tests/reliability/faultproxy.py
between the two where the network is the subject.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.merchant_pos.till import Sale, charge_code
from tests.endtoend.till_process import TillProcess, code_waiting_for_the_pin, pos_home
from tests.reliability.faultproxy import Fault, FaultProxy, Region, Step, fault_proxy
from tests.support.servers import Server, free_port
from tests.support.shop import (
    Merchant,
    code_of,
    new_merchant,
    new_phone,
    new_user,
    use_fast_keystore,
)

EXIT_PAID, EXIT_NOT_PAID, EXIT_OUTCOME_UNKNOWN = 0, 3, 4
SCANNING = "PAY 1.00 CNY"
"""The till's first stderr line: the sale has begun and Ctrl-C now ends it with an outcome."""
STOPPING = "Stopping:"
WAITING = "Waiting for the customer to confirm with their PIN"
ANSWERED_WAIT_S = 20.0


@pytest.fixture
def shop(
    live_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Merchant, str]:
    """A merchant, and a customer's fresh payment code for it."""
    use_fast_keystore(monkeypatch)
    merchant = new_merchant(live_server, "Outcome Cafe")
    wallet = new_phone(live_server, tmp_path / "phone", new_user(live_server), ["v2"])
    return merchant, code_of(wallet, "v2")


@pytest.fixture
def proxy(live_server: Server) -> Iterator[FaultProxy]:
    with fault_proxy(live_server.url) as in_between:
        yield in_between


def _payments(merchant: Merchant, order_id: str) -> list[str]:
    """The statuses of the order's payments, asked of the server directly."""
    return [p["status"] for p in merchant.till.payments_by_order(order_id)]


def _wait_answered(proxy: FaultProxy) -> None:
    """Until the server has answered the first request through `proxy` (the charge is done on
    the server; the proxy may still hold the answer back)."""
    deadline_s = time.monotonic() + ANSWERED_WAIT_S
    while time.monotonic() < deadline_s:
        if any(record.answered is not None for record in proxy.records_since(0)):
            return
        time.sleep(0.02)
    raise AssertionError("the server never answered the charge")


def _sale(home: Path, *extra: str) -> TillProcess:
    """A till scanning typed input (its first line is out); `with` it, so it is killed after."""
    till = TillProcess.start(home, "--amount", "1.00", "--source", "stdin", *extra)
    try:
        till.wait_for_line(SCANNING)
    except BaseException:
        till.kill()
        raise
    return till


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_or_a_kill_while_scanning_is_not_paid_and_says_nothing_was_charged(
    live_server: Server, shop: tuple[Merchant, str], tmp_path: Path, number: signal.Signals
) -> None:
    merchant, _code = shop
    with _sale(pos_home(tmp_path / "pos", live_server.url, merchant)) as till:
        till.signal(number)
        status, outcome, _stderr = till.finish()
    assert status == EXIT_NOT_PAID, outcome
    assert outcome["outcome"] == "not_paid" and outcome["code"] == "cancelled"
    assert "nothing was charged" in outcome["message"]
    assert outcome["order_id"].startswith("pos-") and _payments(merchant, outcome["order_id"]) == []


def test_ctrl_c_while_the_charge_is_in_flight_waits_for_its_answer(
    shop: tuple[Merchant, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    """Before: the till exited 130 without a word, and the customer was charged. (SIGTERM
    takes the same path: test_a_kill_whose_answer_never_comes_is_resolved_by_the_order_id.)"""
    merchant, code = shop
    proxy.script([Step(Fault.DELAY_RESPONSE, delay_s=1.0)])
    with _sale(pos_home(tmp_path / "pos", proxy.url, merchant)) as till:
        till.type_code(code)
        _wait_answered(proxy)
        till.signal(signal.SIGINT)
        status, outcome, stderr = till.finish()
    assert status == EXIT_PAID and outcome["outcome"] == "paid", outcome
    assert STOPPING in stderr
    assert _payments(merchant, outcome["order_id"]) == ["succeeded"]


def test_a_second_ctrl_c_stops_the_wait_and_gives_the_query_command(
    shop: tuple[Merchant, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    merchant, code = shop
    proxy.script([Step(Fault.DELAY_RESPONSE, delay_s=15.0)])
    with _sale(pos_home(tmp_path / "pos", proxy.url, merchant)) as till:
        till.type_code(code)
        _wait_answered(proxy)
        till.signal(signal.SIGINT)
        till.wait_for_line(STOPPING)
        till.signal(signal.SIGINT)
        status, outcome, _stderr = till.finish()
    order_id = outcome["order_id"]
    assert status == EXIT_OUTCOME_UNKNOWN and outcome["outcome"] == "outcome_unknown", outcome
    assert f"paycode-pos query --order-id {order_id}" in outcome["message"]
    assert _payments(merchant, order_id) == ["succeeded"]  # why "unknown", never "not paid"


def test_a_kill_whose_answer_never_comes_is_resolved_by_the_order_id(
    shop: tuple[Merchant, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    """The answer is held past --stop-wait-s: the till asks for the order by its id instead."""
    merchant, code = shop
    proxy.script([Step(Fault.DELAY_RESPONSE, delay_s=25.0)])
    with _sale(pos_home(tmp_path / "pos", proxy.url, merchant), "--stop-wait-s", "1") as till:
        started_s = time.monotonic()
        till.type_code(code)
        _wait_answered(proxy)
        till.signal(signal.SIGTERM)
        status, outcome, _stderr = till.finish()
    assert status == EXIT_PAID and outcome["outcome"] == "paid", outcome
    assert time.monotonic() - started_s < 10


def test_connection_refused_is_not_paid_definitively_with_its_own_code(
    live_server: Server, shop: tuple[Merchant, str], tmp_path: Path
) -> None:
    """Before: "OUTCOME UNKNOWN ... may or may not be paid", though nothing can have been sent."""
    merchant, code = shop
    closed = f"http://127.0.0.1:{free_port()}"
    with _sale(pos_home(tmp_path / "pos", closed, merchant)) as till:
        till.type_code(code)
        status, outcome, _stderr = till.finish()
    assert status == EXIT_NOT_PAID, outcome
    assert outcome["outcome"] == "not_paid" and outcome["code"] == "server_unreachable"
    assert "nothing was charged" in outcome["message"]
    assert _payments(merchant, outcome["order_id"]) == []


def test_a_reply_cut_after_the_charge_was_sent_is_resolved_by_the_order_id(
    shop: tuple[Merchant, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    merchant, code = shop
    proxy.script([Step(Fault.CUT_RESPONSE, region=Region.BODY)] * 4)
    with _sale(pos_home(tmp_path / "pos", proxy.url, merchant)) as till:
        till.type_code(code)
        status, outcome, _stderr = till.finish()
    assert status == EXIT_PAID and outcome["outcome"] == "paid", outcome
    assert _payments(merchant, outcome["order_id"]) == ["succeeded"]


def test_replies_always_cut_end_outcome_unknown_with_the_query_command(
    shop: tuple[Merchant, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    merchant, code = shop
    proxy.script([Step(Fault.DROP_RESPONSE)] * 20)
    with _sale(pos_home(tmp_path / "pos", proxy.url, merchant)) as till:
        till.type_code(code)
        status, outcome, _stderr = till.finish()
    order_id = outcome["order_id"]
    assert status == EXIT_OUTCOME_UNKNOWN and outcome["outcome"] == "outcome_unknown", outcome
    assert f"paycode-pos query --order-id {order_id}" in outcome["message"]
    assert _payments(merchant, order_id) == ["succeeded"]


def test_ctrl_c_while_waiting_for_the_pin_says_the_till_stopped_it_not_a_timeout(
    live_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headless, from an image: the WAITING line is on stderr while the customer is asked for
    their PIN; Ctrl-C then cancels the payment, and the cashier reads that the till stopped
    it (before: "Not confirmed in time")."""
    use_fast_keystore(monkeypatch)
    merchant, image = code_waiting_for_the_pin(live_server, tmp_path, "Waiting Cafe")
    home = pos_home(tmp_path / "pos", live_server.url, merchant)
    with TillProcess.start(
        home, "--amount", "1.00", "--source", f"image:{image}", "--headless"
    ) as till:
        till.wait_for_line(WAITING)
        till.signal(signal.SIGINT)
        status, outcome, _stderr = till.finish()
    assert status == EXIT_NOT_PAID and outcome["code"] == "cancelled_by_merchant", outcome
    assert "not confirmed in time" not in outcome["message"].lower()
    assert "stopped at the till" in outcome["message"].lower()
    assert _payments(merchant, outcome["order_id"]) == ["cancelled"]


def test_a_kill_while_presenting_the_order_cancels_it_and_says_so(
    live_server: Server, shop: tuple[Merchant, str], tmp_path: Path
) -> None:
    """`--present`: SIGTERM used to end the till silently, leaving the order open."""
    merchant, _code = shop
    home = pos_home(tmp_path / "pos", live_server.url, merchant)
    with TillProcess.start(home, "--amount", "1.00", "--present", "--headless") as till:
        till.wait_for_line("PAY 1.00 CNY: the customer scans this code")
        till.signal(signal.SIGTERM)
        status, outcome, _stderr = till.finish()
    assert status == EXIT_NOT_PAID and outcome["code"] == "order_cancelled", outcome
    assert outcome["outcome"] == "not_paid" and outcome["order_id"].startswith("pos-")


def test_replies_that_time_out_after_sending_are_resolved_by_the_order_id_not_called_unsent(
    shop: tuple[Merchant, str], proxy: FaultProxy
) -> None:
    """A timeout is never taken for a refused connection (which would print NOT PAID while the
    server charged): the till's own client, in this process, with a short timeout."""
    merchant, code = shop
    proxy.script([Step(Fault.DELAY_RESPONSE, delay_s=1.0)] * 4)
    till = TerminalClient(proxy.url, merchant.key_id, merchant.secret, timeout_s=0.2)
    outcome = charge_code(till, code, Sale("1.00", "CNY"))
    assert outcome.outcome == "paid", outcome
    assert _payments(merchant, outcome.merchant_order_id) == ["succeeded"]
