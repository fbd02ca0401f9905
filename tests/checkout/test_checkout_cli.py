"""`paycode-pos checkout` and `paycode-pos verify-return` against a live server over HTTP: the
till's terminal key makes a checkout and a payment link, a wallet pays the checkout, and the
signed return the page would send the customer back with verifies from the command line; a
tampered copy exits EXIT_NOT_VALID saying why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paycode.client import online
from paycode.merchant_pos.checkout_commands import EXIT_NOT_VALID
from tests.checkout.test_checkout_api import customer
from tests.support.servers import LiveServer, get_json
from tests.support.shop import ok_json, unique, use_fast_keystore
from tests.support.web_wallet import web_shop

RETURN_URL = "https://shop.example/thanks?cart=7"


def test_checkout_from_the_till_then_verify_the_return(
    live_sqlite: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    shop = web_shop(live_sqlite, tmp_path)
    order_id = unique("WEB")
    made = ok_json(
        shop.pos("checkout", "--amount", "6.60", "--order-id", order_id, "--return-url", RETURN_URL)
    )["checkout"]
    assert made["pay_url"] == f"{live_sqlite.url}/pay/{made['token']}"
    assert (made["kind"], made["merchant_order_id"], made["amount"]) == (
        "checkout",
        order_id,
        "6.60",
    )
    online.pay(customer(live_sqlite, tmp_path), qr_payload=made["qr_payload"], amount=None)

    status, _, state = get_json(f"{made['pay_url']}/status")
    assert status == 200 and state["status"] == "paid"
    valid = ok_json(shop.pos("verify-return", state["return_to"]))
    assert valid["verdict"] == "valid" and valid["fields"]["merchant_order_id"] == order_id

    tampered = state["return_to"].replace("paycode_amount=6.60", "paycode_amount=0.66")
    refused = shop.pos("verify-return", tampered)
    assert refused.returncode == EXIT_NOT_VALID, refused.stdout + refused.stderr
    assert json.loads(refused.stdout) == {"ok": True, "verdict": "altered", "fields": {}}
    dropped = shop.pos("verify-return", state["return_to"].split("&paycode_sig=")[0])
    assert dropped.returncode == EXIT_NOT_VALID
    assert json.loads(dropped.stdout)["verdict"] == "malformed"

    link = ok_json(shop.pos("checkout", "--amount", "1.00", "--link", "--payments-max", "5"))
    assert (link["checkout"]["kind"], link["checkout"]["payments_max"]) == ("link", 5)
    wrong = shop.pos("checkout", "--amount", "1.00", "--return-url", "http://shop.example/")
    assert wrong.returncode == 1 and "return_url_invalid" in wrong.stdout + wrong.stderr
