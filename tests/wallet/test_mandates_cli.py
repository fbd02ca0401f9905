"""`paycode-wallet mandates bind | list | revoke` and the points in `balance`, run as a person
types them (--json, in this process over real HTTP to the server), and the operator's
`paycode-server points grant`, on SQLite and PostgreSQL (docs/operations.md, "Points")."""

from __future__ import annotations

import time
from pathlib import Path

from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.config import ServerConfig
from paycode.server.operations import admin
from paycode.server.safety.secretbox import SecretBox
from tests.support.servers import Server
from tests.support.shop import ok_json, open_shop, unique


def test_bind_list_revoke_from_the_command_line(server: Server, tmp_path: Path) -> None:
    merchant = unique("Partner")
    shop = open_shop(server, tmp_path, merchants=[merchant], top_up="50.00")
    granted = ok_json(
        shop.server_cli("--json", "points", "grant", "--user", shop.customer, "--points", "1200")
    )
    assert granted["balance"] == 1200
    with server.session() as session:
        merchant_id = admin.find_merchant(session, merchant).id
        box = SecretBox.from_config(ServerConfig.from_env(server.env))
        terminal, secret = admin.create_terminal(session, box, merchant_id, time.time())
    till = TerminalClient(server.url, terminal.id, secret, sleep=lambda _s: None)

    balance = shop.wallet("balance")
    assert balance["points"] == {"asset": "PTS", "balance": 1200}
    assert [item["currency"] for item in balance["accounts"]] == ["CNY"]
    bound = shop.wallet(
        "mandates", "bind", "--merchant", merchant_id, "--rate", "100:100",
        "--per-payment", "500", "--per-day", "800", "--expires-in-days", "30",
        "--reference", "card-7",
    )["mandate"]  # fmt: skip
    assert bound["status"] == "active" and bound["reference"] == "card-7"
    mandate_id = bound["mandate_id"]
    till.redeem_points(
        mandate_id=mandate_id, merchant_order_id=unique("o"), amount="5.00", currency="CNY",
        points=300,
    )  # fmt: skip
    (listed,) = shop.wallet("mandates", "list")["items"]
    assert (listed["mandate_id"], listed["used_today_points"]) == (mandate_id, 300)
    human = shop.run(
        "paycode.client.cli",
        ["--home", str(shop.wallet_home), "mandates", "list"],
        shop.env,
    )
    assert human.returncode == 0 and mandate_id in human.stdout and "used today 300" in human.stdout
    assert shop.wallet("balance")["points"]["balance"] == 900

    revoked = shop.wallet("mandates", "revoke", mandate_id)["mandate"]
    assert revoked["status"] == "revoked"
    assert [item["status"] for item in shop.wallet("mandates", "list")["items"]] == ["revoked"]
    assert till.points_mandates()["items"] == []
    usage = shop.wallet_raw("mandates", "bind", "--merchant", merchant_id, "--rate", "100",
                            "--per-payment", "1", "--per-day", "1")  # fmt: skip
    assert usage.returncode != 0 and '"usage"' in usage.stdout
    unknown = shop.wallet_raw("mandates", "revoke", "mdt_nobody")
    assert unknown.returncode != 0 and '"not_found"' in unknown.stdout
