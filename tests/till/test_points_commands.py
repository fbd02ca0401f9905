"""Points mandates from the three command lines, as an operator, a customer and a partner shop
would run them (README "Running a shop"): `paycode-server points grant`, `paycode-wallet
mandates bind|list|revoke`, `paycode-pos mandates|redeem|refund --points`, on SQLite and
PostgreSQL, through the real ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import Server
from tests.support.shop import ok_json, open_shop, unique, use_fast_keystore

SHOP = "Points Partner"


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def test_grant_bind_redeem_refund_and_revoke_from_the_command_lines(
    server: Server, tmp_path: Path
) -> None:
    shop = open_shop(server, tmp_path, merchants=[unique(SHOP)], top_up="50.00")
    granted = shop.server_cli("points", "grant", "--user", shop.customer, "--points", "1000")
    assert granted.returncode == 0, granted.stdout + granted.stderr
    (configured,) = [ran.done for ran in shop.ran if ran.args[:1] == ("configure",)]
    merchant_id = str(ok_json(configured)["merchant"]["merchant_id"])  # the shop tells it
    bound = shop.wallet(
        "mandates", "bind", "--merchant", merchant_id, "--rate", "100:100",
        "--per-payment", "500", "--per-day", "600", "--expires-in-days", "30",
        "--reference", "member-7",
    )  # fmt: skip
    mandate_id = str(bound["mandate"]["mandate_id"])

    (listed,) = ok_json(shop.pos("mandates", "--reference", "member-7"))["items"]
    assert (listed["mandate_id"], listed["left_today_points"]) == (mandate_id, 600)

    order_id = unique("PTS")
    paid = ok_json(
        shop.pos(
            "redeem", "--mandate", mandate_id, "--amount", "10.00", "--points", "300",
            "--order-id", order_id,
        )
    )["payment"]  # fmt: skip
    assert (paid["merchant_order_id"], paid["points"]["points"], paid["points"]["money"]) == (
        order_id,
        300,
        "7.00",
    )
    assert shop.balance() == "43.00"  # 50.00 less the money leg only

    over = shop.pos("redeem", "--mandate", mandate_id, "--amount", "5.00", "--points", "400")
    assert over.returncode == 1 and "mandate_day_cap" in over.stdout + over.stderr
    assert "300" in over.stdout + over.stderr  # the server's detail: what is left today

    refunded = ok_json(shop.pos("refund", paid["payment_id"], "--points", "100"))["refund"]
    assert refunded["points"] == 100 and "amount" not in refunded
    assert shop.balance() == "43.00"  # points came back as points, no money moved

    revoked = shop.wallet("mandates", "revoke", mandate_id)
    assert revoked["mandate"]["status"] == "revoked"
    after = shop.pos("redeem", "--mandate", mandate_id, "--amount", "1.00", "--points", "100")
    assert after.returncode == 1 and "mandate_revoked" in after.stdout + after.stderr
    assert ok_json(shop.pos("mandates"))["items"] == []
    (mine,) = shop.wallet("mandates", "list")["items"]
    assert (mine["status"], mine["used_points"]) == ("revoked", 300)
