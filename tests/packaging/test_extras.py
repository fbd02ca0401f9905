"""The installed names and dependency groups (README, "Layout"): one `paycode` namespace, and a
wallet install that carries neither the server's nor the till's heavy dependencies."""

from __future__ import annotations

import importlib.metadata
import re

import paycode.appkit
import paycode.client
import paycode.merchant_pos
import paycode.server
import paycode.shared

SERVER_ONLY = {
    "flask",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "gunicorn",
    "prometheus-client",
    "pypinyin",
    "anyascii",
}
TILL_ONLY = {"opencv-contrib-python", "pyzbar"}


def _requirements(extra: str | None) -> set[str]:
    """Distribution names `pip install paycode[extra]` pulls directly or through paycode[...]
    (the base requirements always come along)."""
    found: set[str] = set()
    pending = [None, extra]
    seen: set[str | None] = set()
    while pending:  # bounded: each extra is expanded once
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for line in importlib.metadata.requires("paycode") or []:
            requirement, _, marker = line.partition(";")
            wanted = re.search(r'extra\s*==\s*"([^"]+)"', marker)
            if (wanted.group(1) if wanted else None) != current:
                continue
            name = re.match(r"[A-Za-z0-9_.-]+", requirement.strip())
            assert name is not None, line
            nested = re.match(r"paycode\[([^\]]+)\]", requirement.strip())
            if nested:
                pending.extend(part.strip() for part in nested.group(1).split(","))
            else:
                found.add(name.group(0).lower())
    return found


def test_the_wallet_extra_brings_neither_the_server_nor_the_till() -> None:
    wallet = _requirements("wallet")
    assert {"cryptography", "qrcode", "pillow", "zxing-cpp"} <= wallet
    assert not wallet & (SERVER_ONLY | TILL_ONLY), wallet


def test_the_till_and_the_server_pull_what_they_need() -> None:
    assert _requirements("pos") >= TILL_ONLY
    assert not _requirements("pos") & SERVER_ONLY
    assert _requirements("server") >= SERVER_ONLY
    assert _requirements(None) == {"cryptography"}


def test_every_part_is_a_portion_of_one_paycode_namespace() -> None:
    """No part installs as a top-level module of its own (`server`, `client`, ...)."""
    parts = (paycode.shared, paycode.appkit, paycode.client, paycode.merchant_pos, paycode.server)
    assert [part.__name__ for part in parts] == [
        "paycode.shared",
        "paycode.appkit",
        "paycode.client",
        "paycode.merchant_pos",
        "paycode.server",
    ]
    top_level = importlib.metadata.distribution("paycode").read_text("top_level.txt") or "paycode"
    assert set(top_level.split()) == {"paycode"}
