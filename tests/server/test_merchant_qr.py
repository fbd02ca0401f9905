"""Merchant-presented QR you can trust, on SQLite and PostgreSQL (docs/spec.md, section 12).

The attacks found against the earlier main, each a regression test that moves no money and
ends in a stable code: a re-encoded amount, a payer-chosen order reference (squatting), a
swapped payee name, a copied signature on another merchant's payload, an expired or cancelled
order, and eight wallets racing to pay one order. Then one rule for every wallet payment: the
password-free limits at limit - 1, the limit and limit + 1, with and without the PIN.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from paycode.client import merchant_qr, online, pending
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.database.models import Merchant as MerchantRow
from paycode.server.database.models import Order
from paycode.server.safety import qr_keys
from paycode.shared.emv.collection import CollectionCode, build_collection_payload, read_collection
from paycode.shared.emv.mpm import crc16_ccitt_false, decode_mpm
from paycode.shared.emv.qr_signature import Verdict
from paycode.shared.errors import WalletError
from tests.support.servers import Server, all_at_once
from tests.support.shop import (
    PASSWORD,
    Merchant,
    new_merchant,
    new_order,
    new_phone,
    new_user,
    ok_json,
    refused,
    set_limits,
    unique,
    use_fast_keystore,
)

PIN = "135790"


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _customer(server: Server, home: Path, top_up: str = "500.00") -> tuple[str, Wallet]:
    name = new_user(server, "payer", top_up=top_up)
    return name, new_phone(server, home / name, name, ["v2"])


def _order_now(till: TerminalClient, order_id: str) -> dict[str, Any]:
    return till.order(order_id)


def _balance(wallet: Wallet) -> str:
    return str(online.balance(wallet)["accounts"][0]["balance"])


def _with_crc(text_without_crc: str) -> str:
    unsigned = text_without_crc + "6304"
    return unsigned + f"{crc16_ccitt_false(unsigned.encode()):04X}"


def _resigned_with(payload: str, changed: CollectionCode, signature_from: str) -> str:
    """`changed` encoded, then the signature templates of `signature_from` put back on it:
    the best a forger without the server's key can do."""
    unsigned = build_collection_payload(changed)
    donor = decode_mpm(signature_from)
    first = donor.find("80")
    assert first is not None
    return _with_crc(unsigned[:-8] + signature_from[first.offset : -8])


def test_regression_re_encoded_amount_pays_nothing(server: Server, tmp_path: Path) -> None:
    cafe = new_merchant(server)
    _, wallet = _customer(server, tmp_path)
    made = new_order(cafe.till, "88.00", "INV-1042")
    code = read_collection(made["qr_payload"])
    cheap = _resigned_with(made["qr_payload"], replace(code, amount="0.01"), made["qr_payload"])
    before = _balance(wallet)
    refused("qr_invalid", online.pay, wallet, qr_payload=cheap, amount=None)
    with pytest.raises(WalletError) as caught:
        merchant_qr.check(wallet, cheap)
    assert caught.value.code == "qr_invalid"
    assert _balance(wallet) == before
    assert _order_now(cafe.till, made["order_id"])["status"] == "open"


def test_regression_payer_chosen_order_reference_cannot_squat(
    server: Server, tmp_path: Path
) -> None:
    cafe = new_merchant(server)
    _, squatter = _customer(server, tmp_path)
    poster = cafe.till.collection_code(amount=None, this_terminal=False)
    squat = replace(read_collection(poster), amount="0.01", reference="INV-2000")
    for payload in (
        build_collection_payload(squat),  # unsigned
        _resigned_with(poster, squat, poster),  # the poster's signature on it
    ):
        refused("qr_invalid", online.pay, squatter, qr_payload=payload, amount=None)
    # The shop's own order INV-2000 is untouched and pays for the real customer.
    _, customer = _customer(server, tmp_path)
    real = new_order(cafe.till, "30.00", "INV-2000")
    paid = online.pay(customer, qr_payload=real["qr_payload"], amount=None)
    assert paid["amount"] == "30.00" and paid["merchant_order_id"] == "INV-2000"
    assert _order_now(cafe.till, real["order_id"])["status"] == "paid"


def test_regression_swapped_payee_name_is_refused(server: Server, tmp_path: Path) -> None:
    fraud = new_merchant(server, "FraudShop")
    _, wallet = _customer(server, tmp_path)
    poster = fraud.till.collection_code(amount="88.00", this_terminal=False)
    shown = replace(read_collection(poster), merchant_name="Shop A")
    swapped = _resigned_with(poster, shown, poster)
    before = _balance(wallet)
    with pytest.raises(WalletError):
        merchant_qr.check(wallet, swapped)
    refused("qr_invalid", online.pay, wallet, qr_payload=swapped, amount=None)
    assert _balance(wallet) == before


def test_regression_copied_signature_on_another_merchants_payload(
    server: Server, tmp_path: Path
) -> None:
    cafe, fraud = new_merchant(server), new_merchant(server, "FraudShop")
    _, wallet = _customer(server, tmp_path)
    genuine = cafe.till.collection_code(amount="88.00", this_terminal=False)
    theirs = read_collection(fraud.till.collection_code(amount="88.00", this_terminal=False))
    forged = _resigned_with(genuine, replace(theirs, signature=None), genuine)
    before = _balance(wallet)
    refused("qr_invalid", online.pay, wallet, qr_payload=forged, amount=None)
    assert _balance(wallet) == before


def test_an_unsigned_paycode_payload_warns_in_the_wallet_and_the_server_refuses(
    server: Server, tmp_path: Path
) -> None:
    cafe = new_merchant(server)
    _, wallet = _customer(server, tmp_path)
    signed = read_collection(cafe.till.collection_code(amount="5.00", this_terminal=False))
    unsigned = build_collection_payload(replace(signed, signature=None))
    checked = merchant_qr.check(wallet, unsigned)
    assert checked.verdict is Verdict.UNSIGNED and "warning" in checked.payee
    refused("qr_invalid", online.pay, wallet, qr_payload=unsigned, amount=None)
    genuine = merchant_qr.check(
        wallet, cafe.till.collection_code(amount="5.00", this_terminal=False)
    )
    assert genuine.verdict is Verdict.VERIFIED and genuine.payee.endswith("verified")


def test_expired_and_cancelled_orders_are_refused(server: Server, tmp_path: Path) -> None:
    cafe = new_merchant(server)
    _, wallet = _customer(server, tmp_path)
    late = new_order(cafe.till, "12.00", "INV-late", expires_in_s=30)
    with server.session() as session:
        session.execute(update(Order).where(Order.id == late["order_id"]).values(expires_at_s=1.0))
    gone = new_order(cafe.till, "12.00", "INV-gone")
    cancelled = cafe.till.cancel_order(gone["order_id"])
    assert cancelled["status"] == "cancelled"
    before = _balance(wallet)
    refused("order_expired", online.pay, wallet, qr_payload=late["qr_payload"], amount=None)
    refused("order_cancelled", online.pay, wallet, qr_payload=gone["qr_payload"], amount=None)
    assert _balance(wallet) == before
    assert _order_now(cafe.till, late["order_id"])["status"] == "expired"


def test_an_order_id_is_the_merchants_once(server: Server) -> None:
    cafe = new_merchant(server)
    new_order(cafe.till, "1.00", "INV-once")
    refused("duplicate_order", new_order, cafe.till, "2.00", "INV-once")
    refused("currency_mismatch", cafe.till.create_order, "1.00", "USD")
    refused("not_found", _order_now, new_merchant(server).till, "ord_0000000000000000")


def test_eight_wallets_race_to_pay_one_order_exactly_one_pays(
    live_server: Server, tmp_path: Path
) -> None:
    cafe: Merchant = new_merchant(live_server)
    wallets = [_customer(live_server, tmp_path)[1] for _ in range(8)]
    made = new_order(cafe.till, "20.00", "INV-race")

    def pay(wallet: Wallet) -> str:
        try:
            online.pay(wallet, qr_payload=made["qr_payload"], amount=None)
        except Exception as error:
            return str(getattr(error, "code", type(error).__name__))
        return "paid"

    results = all_at_once([lambda w=wallet: pay(w) for wallet in wallets])
    assert sorted(results) == ["duplicate_order"] * 7 + ["paid"], results
    assert sorted(_balance(w) for w in wallets) == ["480.00"] + ["500.00"] * 7
    assert _order_now(cafe.till, made["order_id"])["payment"]["amount"] == "20.00"


@pytest.mark.parametrize(("amount", "pinless"), [("9.99", True), ("10.00", True), ("10.01", False)])
def test_wallet_payments_obey_the_password_free_limit(
    server: Server, tmp_path: Path, amount: str, pinless: bool
) -> None:
    cafe = new_merchant(server)
    name, wallet = _customer(server, tmp_path)
    set_limits(server, name, payment_max="10.00")
    pending.set_pin(wallet, password=PASSWORD, pin=PIN)
    poster = cafe.till.collection_code(amount=amount, this_terminal=False)
    if not pinless:
        asked = refused("pin_required", online.pay, wallet, qr_payload=poster, amount=None)
        assert "10.01 CNY is above the 10.00 CNY one payment may be without the PIN" in str(asked)
        refused("pin_invalid", online.pay, wallet, qr_payload=poster, amount=None, pin="000000")
        assert _balance(wallet) == "500.00"
    paid = online.pay(wallet, qr_payload=poster, amount=None, pin=None if pinless else PIN)
    assert paid["status"] == "succeeded" and paid["amount"] == amount
    with_pin = online.pay(wallet, qr_payload=poster, amount=None, pin=PIN)  # always allowed
    assert with_pin["status"] == "succeeded"
    spent = 2 * int(amount.replace(".", ""))
    assert _balance(wallet) == f"{(50_000 - spent) // 100}.{(50_000 - spent) % 100:02d}"


def test_the_daily_count_applies_to_wallet_payments(server: Server, tmp_path: Path) -> None:
    cafe = new_merchant(server)
    name, wallet = _customer(server, tmp_path)
    set_limits(server, name, daily_count_max=2)
    poster = cafe.till.collection_code(amount="1.00", this_terminal=False)
    for _ in range(2):
        online.pay(wallet, qr_payload=poster, amount=None)
    asked = refused("pin_required", online.pay, wallet, qr_payload=poster, amount=None)
    assert "2 payments a day are password-free and 2 were made today" in str(asked)


def test_the_pin_required_refusal_names_the_daily_total(server: Server, tmp_path: Path) -> None:
    """A new user meets the limits at the till: the refusal says which one (issue: defaults
    explained where they are met)."""
    cafe = new_merchant(server)
    name, wallet = _customer(server, tmp_path)
    set_limits(server, name, daily_max="15.00")
    poster = cafe.till.collection_code(amount="8.00", this_terminal=False)
    online.pay(wallet, qr_payload=poster, amount=None)
    asked = refused("pin_required", online.pay, wallet, qr_payload=poster, amount=None)
    assert "today's password-free total would pass 15.00 CNY (8.00 CNY so far)" in str(asked)


def test_a_merchant_in_its_own_script_gets_the_language_template(server: Server) -> None:
    cafe = new_merchant(server)
    with server.session() as session:
        session.execute(
            update(MerchantRow)
            .where(MerchantRow.id == cafe.merchant_id)
            .values(name="北京烤鸭店", city="北京", ascii_name="Beijing Kaoya Dian",
                    ascii_city="Beijing", language="ZH")
        )  # fmt: skip
    code = read_collection(cafe.till.collection_code(amount=None, this_terminal=False))
    assert (code.merchant_name, code.merchant_city) == ("Beijing Kaoya Dian", "Beijing")
    assert (code.language, code.local_name, code.local_city) == ("ZH", "北京烤鸭店", "北京")
    assert code.display_name == "北京烤鸭店"


def test_qr_key_rotation_keeps_old_posters_until_the_key_is_retired(
    server: Server, tmp_path: Path
) -> None:
    cafe = new_merchant(server)
    _, wallet = _customer(server, tmp_path)
    old_poster = cafe.till.collection_code(amount="1.00", this_terminal=False)
    old_key = read_collection(old_poster).signature
    assert old_key is not None
    rotated = ok_json(server.cli_in_process("--json", "keys", "rotate-qr"))
    qr_keys.forget_cache()  # the server's workers see it within KEYS_TTL_S
    new_poster = cafe.till.collection_code(amount="1.00", this_terminal=False)
    assert read_collection(new_poster).signature.key_id == rotated["key_id"]  # type: ignore[union-attr]
    assert merchant_qr.check(wallet, new_poster).verdict is Verdict.UNKNOWN_KEY
    online.refresh_qr_keys(wallet)  # what `paycode-wallet pay` does for an unknown key
    assert merchant_qr.check(wallet, new_poster).verdict is Verdict.VERIFIED
    assert merchant_qr.check(wallet, old_poster).verdict is Verdict.VERIFIED
    online.pay(wallet, qr_payload=old_poster, amount=None)  # the old poster still pays
    ok_json(server.cli_in_process("--json", "keys", "retire-qr", old_key.key_id))
    qr_keys.forget_cache()
    refused("qr_invalid", online.pay, wallet, qr_payload=old_poster, amount=None)
    online.pay(wallet, qr_payload=new_poster, amount=None)
    last = server.cli_in_process("--json", "keys", "retire-qr", rotated["key_id"])
    assert last.returncode != 0 and "last live QR key" in last.stdout


def test_regression_poster_amount_as_a_json_number_is_refused(server: Server) -> None:
    """Money is a decimal string: a JSON number (a float on the wire) makes no poster."""
    cafe = new_merchant(server)
    for amount in (2.5, 88, True):
        refused(
            "amount_invalid",
            lambda a=amount: cafe.till._call(
                "POST", "/v1/collection-codes", {"amount": a}, idempotency_key=unique("k")
            ),
        )
    assert cafe.till.collection_code(amount="2.50", this_terminal=False)
