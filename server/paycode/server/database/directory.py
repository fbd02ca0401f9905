"""Per-process caches of what never changes for a row: terminal secrets and device keys.
A terminal's entry also carries its merchant's allow-list and notify flag, which an operator
may change (`merchants update`): those entries are reloaded after MERCHANT_SETTINGS_TTL_S.

A charge must not pay for a database round trip and an AES-GCM unseal just to learn a secret
that was fixed when its terminal or device was created. What can change (a revocation, a
device's learned drift) is never trusted from here: the charge transaction re-reads it under
its own locks, and a verification that fails on cached state is retried on fresh rows. So the
caches hold no state another worker or host would need, and every entry is safe to drop.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import Engine, select

from paycode.server.database.engine import read_only
from paycode.server.database.models import Device, Merchant, Terminal
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.versions.base import DeviceRecord

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
K = TypeVar("K")
V = TypeVar("V")

TERMINALS_CACHED_MAX = 10_000
MERCHANT_SETTINGS_TTL_S = 5.0
"""How long a worker keeps a terminal's merchant settings (allow-list, notify flag) before it
reads them again: a `merchants update` is in force everywhere within this."""
DEVICES_CACHED_MAX = 200_000
"""About 200 bytes an entry: 40 MB per worker at the bound, for the busiest devices."""


class BoundedCache(Generic[K, V]):
    """A thread-safe LRU map holding at most `entries_max` entries."""

    def __init__(self, entries_max: int) -> None:
        assert entries_max > 0
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._entries_max = entries_max
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._entries_max:
                self._entries.popitem(last=False)
            assert len(self._entries) <= self._entries_max

    def drop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(frozen=True, slots=True)
class TerminalCredential:
    """A live terminal's signing secret and its merchant (the secret is fixed for the
    terminal's life; the merchant's settings are re-read after MERCHANT_SETTINGS_TTL_S)."""

    terminal_id: str
    merchant_id: str
    currency: str
    secret: bytes = field(repr=False)
    allowed_networks: tuple[IPNetwork, ...] = ()
    """Where its requests may come from (the merchant's allow-list); () means anywhere."""
    notify: bool = False
    """The merchant has a notify_url: its charges write a notification in their transaction."""
    loaded_at_s: float = 0.0
    """time.monotonic() when read: the merchant's settings are re-read after a while."""

    def allows(self, address: str | None) -> bool:
        if not self.allowed_networks:
            return True
        try:
            client = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(client in network for network in self.allowed_networks)


@dataclass(frozen=True, slots=True)
class CachedDevice:
    record: DeviceRecord
    user_id: str
    online_for: str | None = None
    """A server-held issuer's requesting device (docs/spec.md §14); fixed for the row's life."""


class Directory:
    """Terminals and devices of one database, cached per process (see the module docstring)."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box
        self._terminals: BoundedCache[str, TerminalCredential] = BoundedCache(TERMINALS_CACHED_MAX)
        self._devices: BoundedCache[tuple[str, bytes], CachedDevice] = BoundedCache(
            DEVICES_CACHED_MAX
        )

    def terminal(self, key_id: str) -> TerminalCredential | None:
        """The terminal signing with `key_id`, or None when it is unknown or revoked."""
        cached = self._terminals.get(key_id)
        if cached is not None and time.monotonic() - cached.loaded_at_s < MERCHANT_SETTINGS_TTL_S:
            return cached
        statement = (
            select(
                Terminal.__table__, Merchant.currency, Merchant.allowed_cidrs, Merchant.notify_url
            )
            .join(Merchant, Merchant.id == Terminal.merchant_id)
            .where(Terminal.id == key_id)
        )
        with read_only(self._engine) as connection:
            row = connection.execute(statement).one_or_none()
        if row is None or row.revoked_at_s is not None:
            return None
        secret = self._box.open(row.key_id, row.secret_sealed, row_id=row.id)
        networks = tuple(
            ipaddress.ip_network(cidr) for cidr in (row.allowed_cidrs or "").split(",") if cidr
        )
        credential = TerminalCredential(
            row.id,
            row.merchant_id,
            row.currency,
            secret,
            networks,
            row.notify_url is not None,
            time.monotonic(),
        )
        self._terminals.put(key_id, credential)
        return credential

    def forget_terminal(self, key_id: str) -> None:
        self._terminals.drop(key_id)

    def device(self, version: str, handle: bytes, *, fresh: bool = False) -> CachedDevice | None:
        """The device enrolled as (version, handle); `fresh` skips the cache (a retry)."""
        if not fresh:
            cached = self._devices.get((version, handle))
            if cached is not None:
                return cached
        statement = select(Device.__table__).where(
            Device.version == version, Device.handle == handle
        )
        with read_only(self._engine) as connection:
            row = connection.execute(statement).one_or_none()
        if row is None:
            return None
        if row.key_sealed is not None and row.key_id is not None:
            key = self._box.open(row.key_id, row.key_sealed, row_id=row.id)
        else:
            assert row.public_key is not None, "a device has a sealed key or a public key"
            key = row.public_key
        revoked = row.revoked_at_s is not None
        record = DeviceRecord(row.id, row.handle, key, row.drift_steps, revoked)
        found = CachedDevice(record, row.user_id, row.online_for_device_id)
        self._devices.put((version, handle), found)
        return found

    def forget_device(self, version: str, handle: bytes) -> None:
        """Drop a device this process saw revoked. Only a courtesy: the charge transaction
        re-reads revocation anyway, and other processes learn it there."""
        self._devices.drop((version, handle))

    def learned_drift(self, version: str, found: CachedDevice, drift_steps: int) -> None:
        """Remember the drift the charge transaction is about to store for this device."""
        record = found.record
        if drift_steps != record.drift_steps:
            updated = DeviceRecord(
                record.device_id, record.handle, record.key, drift_steps, record.revoked
            )
            cached = CachedDevice(updated, found.user_id, found.online_for)
            self._devices.put((version, record.handle), cached)
