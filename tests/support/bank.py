"""A small bank for server tests: one app, a user with devices of every version, a merchant
with a terminal, served over real HTTP (werkzeug in a thread) or used directly."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from paycode.server.app import create_app
from paycode.server.books import ledger
from paycode.server.config import ServerConfig
from paycode.server.database.engine import make_engine
from paycode.server.database.models import Base, Device, Merchant, Terminal, User, new_id
from paycode.server.safety import keyring
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.versions.base import DeviceCredential
from paycode.shared.versions.registry import VERSIONS

SHUTDOWN_POLL_S = 0.02
"""How often a served bank's loop looks for shutdown(): the default 0.5 s made every test that
serves a bank wait up to half a second at teardown, for nothing."""


@dataclass
class Bank:
    app: Flask
    engine: Engine
    box: SecretBox
    url: str = ""
    credentials: dict[str, DeviceCredential] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    terminals: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """merchant id -> (terminal key id, secret)."""
    user_id: str = ""

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def balance(self, owner_kind: str, owner_id: str, currency: str = "CNY") -> int:
        with self.session() as session:
            found = ledger.account(session, owner_kind, owner_id, currency)
            assert found is not None
            return found.balance_minor

    def ledger_sum(self) -> int:
        with self.session() as session:
            return ledger.ledger_sum_minor(session)


def make_bank(database_url: str, instance: Path, *, statuses_ttl_s: float | None = None) -> Bank:
    """`statuses_ttl_s`: ServerConfig.statuses_ttl_s (None: the production TTL)."""
    config = ServerConfig(
        database_url=database_url,
        instance_path=instance,
        master_keys={"mk1": os.urandom(32)},
        master_key_id="mk1",
        testing=True,
        statuses_ttl_s=statuses_ttl_s,
    )
    keyring.forget_cache()
    engine = make_engine(database_url)
    Base.metadata.create_all(engine)
    box = SecretBox.from_config(config)
    with Session(engine) as session, session.begin():
        keyring.ensure_keys(session, box, time.time())
    return Bank(create_app(config), engine, box)


def add_user(
    bank: Bank,
    name: str,
    balance_minor: int,
    currency: str = "CNY",
    *,
    pinless_count_max: int | None = None,
) -> str:
    """A user with one account; `pinless_count_max` raises the daily password-free count."""
    now_s = time.time()
    with bank.session() as session, session.begin():
        user = User(id=new_id("usr"), name=name, password_hash="scrypt$unused", created_at_s=now_s)
        session.add(user)
        session.flush()
        account = ledger.open_account(session, "user", user.id, currency)
        account.pinless_daily_count_max = pinless_count_max
        if balance_minor:
            ledger.transfer(
                session,
                kind="top_up",
                debit=ledger.system_account(session, currency),
                credit=account,
                amount_minor=balance_minor,
                now_s=now_s,
            )
    return user.id


def add_devices(bank: Bank, user_id: str) -> dict[str, DeviceCredential]:
    """One device per live version, keyed and sealed the way enrollment stores them."""
    now_s = time.time()
    credentials: dict[str, DeviceCredential] = {}
    with bank.session() as session, session.begin():
        _, current = keyring.load_keys(session, bank.box)
        for codec in VERSIONS:
            device_id, handle = new_id("dev"), codec.new_handle()
            row = Device(
                id=device_id,
                user_id=user_id,
                version=codec.version,
                handle=handle,
                drift_steps=0,
                label="test",
                created_at_s=now_s,
            )
            if codec.version == "v3":
                seed, public = new_ed25519_seed()
                row.public_key = public
                credentials[device_id] = DeviceCredential(
                    "v3", handle, seed, seal_public_key=current["seal_public"]
                )
            else:
                device_key = os.urandom(32)
                row.key_id, row.key_sealed = bank.box.seal(device_key, row_id=device_id)
                credentials[device_id] = DeviceCredential(
                    codec.version, handle, device_key, hiding_key=current[codec.version]
                )
            session.add(row)
    return credentials


def add_merchant(bank: Bank, name: str, currency: str = "CNY") -> str:
    now_s = time.time()
    with bank.session() as session, session.begin():
        merchant = Merchant(id=new_id("mer"), name=name, currency=currency, created_at_s=now_s)
        session.add(merchant)
        session.flush()
        ledger.open_account(session, "merchant", merchant.id, currency)
        secret = os.urandom(32)
        terminal_id = new_id("term")
        key_id, sealed = bank.box.seal(secret, row_id=terminal_id)
        session.add(
            Terminal(
                id=terminal_id,
                merchant_id=merchant.id,
                key_id=key_id,
                secret_sealed=sealed,
                created_at_s=now_s,
            )
        )
    bank.terminals[merchant.id] = (terminal_id, secret)
    return merchant.id


def device_of(bank: Bank, version: str) -> tuple[str, DeviceCredential]:
    for device_id, credential in bank.credentials.items():
        if credential.version == version:
            return device_id, credential
    raise KeyError(version)


def revoke(bank: Bank, device_id: str) -> None:
    with bank.session() as session, session.begin():
        device = session.scalars(select(Device).where(Device.id == device_id)).one()
        device.revoked_at_s = time.time()


@contextmanager
def served(bank: Bank) -> Iterator[str]:
    """Serve the bank's app over real HTTP on a free loopback port."""
    server = make_server("127.0.0.1", 0, bank.app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True
    )
    thread.start()
    try:
        bank.url = f"http://127.0.0.1:{server.server_port}"
        yield bank.url
    finally:
        server.shutdown()
        thread.join(timeout=10)


def engine_for(url: str) -> Engine:
    return create_engine(url)


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An SQLite file in `tmp_path`, or a fresh PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'bank.db'}"
    else:
        from tests.support.servers import postgres_database

        with postgres_database() as url:
            yield url


@contextmanager
def served_bank(backend: str, tmp_path: Path, start_minor: int) -> Iterator[Bank]:
    """alice (a device per version, `start_minor` CNY), Corner Cafe and Other Shop with a
    terminal each, served over real HTTP; everything disposed of afterwards."""
    with database_url(backend, tmp_path) as url:
        bank = make_bank(url, tmp_path)
        bank.user_id = add_user(bank, "alice", start_minor)
        bank.credentials = add_devices(bank, bank.user_id)
        add_merchant(bank, "Corner Cafe")
        add_merchant(bank, "Other Shop")
        try:
            with served(bank):
                yield bank
        finally:
            bank.engine.dispose()
            bank.app.extensions["paycode_engine"].dispose()
