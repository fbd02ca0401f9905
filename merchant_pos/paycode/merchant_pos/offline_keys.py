"""The till's copy of the server's offline keys (docs/offline.md 4.1).

`GET /v1/offline/keys` answers the server's offline public keys, the certificates it no longer
honours (`denied`), the merchant's offline limits and who this till is. The till keeps the
answer as `offline/keys.json` in the POS home (0600, written atomically) with the local time it
was fetched and the server clock offset it learned, and decides offline sales with it alone.

A copy older than `MAX_AGE_S`, or none, and the till takes no offline sale
(`offline_not_ready`): a key retired or a certificate denied since would go unnoticed longer.
Every field is read strictly: a malformed answer or file is `OfflineKeysInvalid`, never half
believed.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from paycode.appkit.private_files import write_private
from paycode.merchant_pos.offline_log import LOG_FOLDER
from paycode.shared.binding import charging_point_bindings
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import PaycodeError
from paycode.shared.offline import KEY_BYTES, KEY_ID_BYTES, key_id

KEYS_FILE = "keys.json"
FORMAT = 1
MAX_AGE_S = 172_800
"""M: 48 h. Rotation publishes a `next` key at least this long before it signs (4.1)."""
REFRESH_AGE_S = 600
"""After an online sale the till refetches a copy older than this."""
CLOCK_BACK_S = 600
"""A copy "fetched" further in the future than this is not trusted: the till's clock was
moved back, and its age cannot be told."""
KEYS_MAX = 16
DENIED_MAX = 100_000
"""A day of returned certificates of a large scheme; a longer list is refused, not cut."""
FILE_BYTES_MAX = 8 << 20
ID_CHARS_MAX = 64
STATUSES = frozenset({"signing", "next", "old"})
U32_MAX = 2**32 - 1
SECONDS_MAX = 2**53

_KEY_ID = re.compile(r"[0-9a-f]{8}", re.ASCII)
_CERT_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_B64URL = re.compile(r"[A-Za-z0-9_-]+=*", re.ASCII)


class OfflineKeysInvalid(PaycodeError):
    """The server's answer, or the stored copy, is not a keys document: no offline sale."""

    code = ErrorCode.OFFLINE_NOT_READY


@dataclass(frozen=True)
class ServerKey:
    key_id: bytes
    public_key: bytes
    status: str
    accept_until_s: int
    """Certificates this key signed are accepted while `now < accept_until_s`."""


@dataclass(frozen=True)
class OfflineLimits:
    floor_minor: int
    """F: the most one offline payment may be; 0 turns offline sales off."""
    till_total_minor: int
    """Q: the most this till may hold unsynced."""
    till_count_max: int
    unsynced_age_max_s: int


@dataclass(frozen=True)
class OfflineKeys:
    keys: tuple[ServerKey, ...]
    denied: Mapping[str, int]
    """cert_id (32 hex) -> until_s."""
    limits: OfflineLimits
    currency: str
    merchant_id: str
    terminal_id: str
    fetched_at_s: float
    """This till's own clock when the answer came."""
    clock_offset_s: float
    """Server time minus this till's clock, learned from the answer."""

    def age_s(self, local_now_s: float) -> float:
        return local_now_s - self.fetched_at_s

    def ready(self, local_now_s: float) -> bool:
        """Young enough to decide offline sales with (`local_now_s`: the till's own clock)."""
        return -CLOCK_BACK_S <= self.age_s(local_now_s) < MAX_AGE_S

    def server_time(self, local_now_s: float) -> float:
        """The till's clock corrected by the offset learned with this copy."""
        return local_now_s + self.clock_offset_s

    def server_keys(self, now_s: float) -> dict[bytes, bytes]:
        """Key id -> public key of the keys still accepted at `now_s` (server time)."""
        return {k.key_id: k.public_key for k in self.keys if now_s < k.accept_until_s}

    def key(self, key_id: bytes) -> ServerKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)

    def denied_at(self, cert_id: str, now_s: float) -> bool:
        until_s = self.denied.get(cert_id)
        return until_s is not None and now_s < until_s

    def bindings(self) -> tuple[bytes, bytes]:
        """What a code bound to this till may carry (docs/spec.md §10)."""
        return charging_point_bindings(self.merchant_id, self.terminal_id)

    def document(self) -> dict[str, Any]:
        """The stored form: the server's fields as it sent them, plus the fetch's own two."""
        return {
            "keys": [
                {
                    "key_id": k.key_id.hex(),
                    "public_key": base64.urlsafe_b64encode(k.public_key).decode().rstrip("="),
                    "status": k.status,
                    "accept_until_s": k.accept_until_s,
                }
                for k in self.keys
            ],
            "denied": [{"cert_id": c, "until_s": u} for c, u in sorted(self.denied.items())],
            "limits": {
                "floor_minor": self.limits.floor_minor,
                "till_total_minor": self.limits.till_total_minor,
                "till_count_max": self.limits.till_count_max,
                "unsynced_age_max_s": self.limits.unsynced_age_max_s,
            },
            "currency": self.currency,
            "merchant_id": self.merchant_id,
            "terminal_id": self.terminal_id,
            "fetched_at_s": self.fetched_at_s,
            "clock_offset_s": self.clock_offset_s,
            "v": FORMAT,
        }


# -- strict reading --------------------------------------------------------------------------


def _field(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise OfflineKeysInvalid(f"offline keys: {name} must be {kind.__name__}")
    return value


def _int(data: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = _field(data, name, int)
    if not low <= value <= high:
        raise OfflineKeysInvalid(f"offline keys: {name} must be within {low}..{high}")
    return int(value)


def _seconds(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise OfflineKeysInvalid(f"offline keys: {name} must be a number of seconds")
    if abs(value) > SECONDS_MAX:
        raise OfflineKeysInvalid(f"offline keys: {name} is out of range")
    return float(value)


def _text(data: Mapping[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = _field(data, name, str)
    if pattern is not None and not pattern.fullmatch(value):
        raise OfflineKeysInvalid(f"offline keys: {name} is not of its form")
    if pattern is None and not (0 < len(value) <= ID_CHARS_MAX and value.isprintable()):
        raise OfflineKeysInvalid(f"offline keys: {name} must be 1..{ID_CHARS_MAX} characters")
    return str(value)


def _public_key(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise OfflineKeysInvalid("offline keys: public_key must be base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise OfflineKeysInvalid("offline keys: public_key must be base64url") from error
    if len(raw) != KEY_BYTES:
        raise OfflineKeysInvalid(f"offline keys: public_key must be {KEY_BYTES} bytes")
    return raw


def _server_key(item: Any) -> ServerKey:
    if not isinstance(item, dict):
        raise OfflineKeysInvalid("offline keys: each key is an object")
    wanted = bytes.fromhex(_text(item, "key_id", _KEY_ID))
    public_key = _public_key(_text(item, "public_key", _B64URL))
    status = _text(item, "status")
    if status not in STATUSES:
        raise OfflineKeysInvalid(f"offline keys: status must be one of {sorted(STATUSES)}")
    if key_id(public_key) != wanted:
        # The id is self-certifying (§2.3): one that does not match is a damaged answer.
        raise OfflineKeysInvalid("offline keys: a key_id is not its key's id")
    assert len(wanted) == KEY_ID_BYTES
    return ServerKey(wanted, public_key, status, _int(item, "accept_until_s", 0, U32_MAX))


def _list(data: Mapping[str, Any], name: str, most: int) -> list[Any]:
    value = _field(data, name, list)
    if len(value) > most:
        raise OfflineKeysInvalid(f"offline keys: more than {most} {name}")
    return list(value)


def _denied(items: list[Any]) -> dict[str, int]:
    denied: dict[str, int] = {}
    for item in items:
        if not isinstance(item, dict):
            raise OfflineKeysInvalid("offline keys: each denied entry is an object")
        cert_id = _text(item, "cert_id", _CERT_ID)
        denied[cert_id] = max(denied.get(cert_id, 0), _int(item, "until_s", 0, U32_MAX))
    return denied


def _limits(data: Any) -> OfflineLimits:
    if not isinstance(data, dict):
        raise OfflineKeysInvalid("offline keys: limits is an object")
    return OfflineLimits(
        floor_minor=_int(data, "floor_minor", 0, U32_MAX),
        till_total_minor=_int(data, "till_total_minor", 0, U32_MAX),
        till_count_max=_int(data, "till_count_max", 0, 20_000),
        unsynced_age_max_s=_int(data, "unsynced_age_max_s", 0, U32_MAX),
    )


def parse_answer(body: Any, *, fetched_at_s: float, clock_offset_s: float) -> OfflineKeys:
    """The server's answer as the till's copy; OfflineKeysInvalid for anything malformed."""
    if not isinstance(body, dict):
        raise OfflineKeysInvalid("offline keys: the answer is not an object")
    keys = tuple(_server_key(item) for item in _list(body, "keys", KEYS_MAX))
    if len({k.key_id for k in keys}) != len(keys):
        raise OfflineKeysInvalid("offline keys: a key_id is listed twice")
    return OfflineKeys(
        keys=keys,
        denied=_denied(_list(body, "denied", DENIED_MAX)),
        limits=_limits(body.get("limits")),
        currency=_text(body, "currency", _CURRENCY),
        merchant_id=_text(body, "merchant_id"),
        terminal_id=_text(body, "terminal_id"),
        fetched_at_s=fetched_at_s,
        clock_offset_s=clock_offset_s,
    )


# -- the file --------------------------------------------------------------------------------


def keys_path(home: Path) -> Path:
    return home / LOG_FOLDER / KEYS_FILE


def save(home: Path, keys: OfflineKeys) -> Path:
    path = keys_path(home)
    write_private(path, json.dumps(keys.document(), separators=(",", ":")).encode())
    return path


def load(home: Path) -> OfflineKeys | None:
    """The stored copy; None when the till never fetched one; OfflineKeysInvalid if damaged."""
    path = keys_path(home)
    try:
        with path.open("rb") as handle:
            data = handle.read(FILE_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    if len(data) > FILE_BYTES_MAX:
        raise OfflineKeysInvalid(f"{path.name} is larger than {FILE_BYTES_MAX} bytes")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise OfflineKeysInvalid(f"{path.name} is not JSON: fetch the keys again") from error
    if not isinstance(document, dict) or document.get("v") != FORMAT:
        raise OfflineKeysInvalid(f"{path.name} is not a keys copy of format {FORMAT}")
    return parse_answer(
        document,
        fetched_at_s=_seconds(document, "fetched_at_s"),
        clock_offset_s=_seconds(document, "clock_offset_s"),
    )


class KeysSource(Protocol):
    """What fetching needs of the terminal client."""

    clock_offset_s: float

    def offline_keys(self) -> dict[str, Any]: ...


def fetch(client: KeysSource, home: Path, *, local_now_s: float) -> OfflineKeys:
    """GET /v1/offline/keys, checked, stored; the server's refusal (ServerRejected: 404 from a
    server without offline payments) and silence (ServerUnreachable) pass through, and the
    stored copy is then left as it was."""
    body = client.offline_keys()
    keys = parse_answer(body, fetched_at_s=local_now_s, clock_offset_s=client.clock_offset_s)
    save(home, keys)
    return keys
