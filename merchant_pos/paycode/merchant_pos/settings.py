"""The till's configuration: server URL, terminal key id and secret, default currency.

Kept in the POS home (`--home`, $PAYCODE_POS_HOME, or ~/.paycode/pos) as `pos.json`, written
atomically with 0600 permissions in a 0700 folder: the terminal secret signs charges.
`configure` proves the key with one signed call before saving (`prove_key`): a wrong key id,
secret or clock is then told at set-up, not at the first sale.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from paycode.appkit.private_files import write_private
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import CurrencyMismatch, PaycodeError, ServerRejected, ServerUnreachable
from paycode.shared.money import currency as known_currency
from paycode.shared.terminal_auth import SECRET_BYTES

HOME_ENV = "PAYCODE_POS_HOME"
SETTINGS_FILE = "pos.json"
KEY_ID_CHARS_MAX = 64
CURRENCY_DEFAULT = "CNY"
"""Saved when `configure --offline` is not told a currency (online, the merchant's is)."""
NOT_SAVED = "nothing was saved"


class PosNotConfigured(PaycodeError):
    code = ErrorCode.POS_NOT_CONFIGURED


class SettingsInvalid(PaycodeError):
    code = ErrorCode.INVALID_ARGUMENT


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".paycode" / "pos")


@dataclass(frozen=True)
class PosSettings:
    server_url: str
    key_id: str
    secret: bytes = field(repr=False)
    currency: str = "CNY"

    def client(self) -> TerminalClient:
        return TerminalClient(self.server_url, self.key_id, self.secret)


def parse_secret(text: str) -> bytes:
    """The base64 secret `paycode-server terminals create` printed."""
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise SettingsInvalid("the terminal secret must be the base64 text printed once") from error
    if len(secret) != SECRET_BYTES:
        raise SettingsInvalid(f"the terminal secret must decode to {SECRET_BYTES} bytes")
    return secret


def validated(server_url: str, key_id: str, secret: bytes, currency: str) -> PosSettings:
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsInvalid(f"--server must be an http(s) URL, got {server_url!r}")
    if not key_id or len(key_id) > KEY_ID_CHARS_MAX or not key_id.isprintable():
        raise SettingsInvalid("--key-id must be the key id printed by `terminals create`")
    return PosSettings(server_url.rstrip("/"), key_id, secret, validated_currency(currency))


def prove_key(settings: PosSettings) -> dict[str, Any]:
    """The merchant this terminal key collects for, from one signed GET /v1/merchant: its
    answer proves the key id, the secret and this till's clock. The server's refusal keeps
    its code; no answer is ServerUnreachable."""
    try:
        return settings.client().merchant()
    except ServerRejected as error:
        raise ServerRejected(
            error.code,
            f"the server refused this terminal key ({error.message}): check --key-id, the "
            f"secret and this till's clock; {NOT_SAVED}",
            status=error.status,
        ) from error
    except ServerUnreachable as error:
        raise ServerUnreachable(
            f"{error.message}; {NOT_SAVED} (to save without checking the key, pass --offline)"
        ) from error


def with_merchant_currency(
    settings: PosSettings, merchant: dict[str, Any], asked: str | None
) -> PosSettings:
    """The settings in the merchant's currency; a --currency that is not it is refused (every
    charge in it would be)."""
    currency = merchant.get("currency")
    if not isinstance(currency, str):
        raise SettingsInvalid(f"the server's answer names no merchant currency; {NOT_SAVED}")
    if asked is not None and asked.upper() != currency.upper():
        raise CurrencyMismatch(
            f"--currency {asked}, but this terminal's merchant takes {currency}; {NOT_SAVED}"
        )
    return replace(settings, currency=validated_currency(currency))


def validated_currency(currency: str) -> str:
    try:
        known_currency(currency)
    except PaycodeError as error:
        raise SettingsInvalid(f"--currency: {error.message}") from error
    return currency


def save(home: Path, settings: PosSettings) -> Path:
    path = home / SETTINGS_FILE
    data = {
        "server_url": settings.server_url,
        "key_id": settings.key_id,
        "secret": base64.b64encode(settings.secret).decode("ascii"),
        "currency": settings.currency,
    }
    write_private(path, json.dumps(data, indent=2).encode())
    return path


def load(home: Path) -> PosSettings:
    path = home / SETTINGS_FILE
    if not path.is_file():
        raise PosNotConfigured(
            f"this till is not configured ({path} missing): run `paycode-pos configure "
            "--server URL --key-id KEY --secret-stdin`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return validated(
            data["server_url"], data["key_id"], parse_secret(data["secret"]), data["currency"]
        )
    except (ValueError, KeyError, TypeError, SettingsInvalid) as error:
        raise PosNotConfigured(f"{path} is damaged; run `paycode-pos configure` again") from error
