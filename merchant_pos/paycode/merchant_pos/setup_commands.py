"""The till's commands that charge nothing: `configure` (set up once, the key proved with the
server first) and `inspect` (what is this code?). docs/pos.md, "Set up once" and "After the
sale"."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from paycode.appkit.console import emit, printable
from paycode.merchant_pos import settings
from paycode.merchant_pos.identify import describe
from paycode.merchant_pos.offline_commands import configure_offline
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import PaycodeError

MERCHANT_SHOWN = ("merchant_id", "name", "terminal_id")
"""What `configure` repeats of the server's GET /v1/merchant: whom the key collects for."""


class ScanError(PaycodeError):
    """`inspect --image` found no code at all in the picture."""

    code = ErrorCode.NO_CODE_FOUND


def _human(found: list[dict[str, object]]) -> str:
    """What was scanned, each value escaped: the text is whoever printed the code's choice."""
    lines = []
    for item in found:
        head = f"[{item.get('format', 'text')}] {item.get('kind')}"
        if item.get("version"):
            head += f" {item['version']}"
        if "well_formed" in item:
            head += (
                " (well-formed)"
                if item["well_formed"]
                else f" ({item.get('error')}: {printable(item.get('message'))})"
            )
        lines.append(f"{printable(head)}\n    {printable(item.get('text'))}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.text is not None:
        found = [describe(args.text) | {"format": "text"}]
    else:
        # Deferred: OpenCV and zxing take ~0.2 s to load; --text should not pay for them.
        from paycode.merchant_pos.stillread import read_image_file  # noqa: PLC0415

        decoded = read_image_file(args.image)  # every pass of the till's scanner
        if not decoded:
            raise ScanError(f"no QR code or Code 128 barcode found in {args.image}")
        found = [describe(d.text) | {"format": d.format, "backend": d.backend} for d in decoded]
    emit(args, _human(found), {"codes": found})
    return 0


def cmd_configure(args: argparse.Namespace) -> int:
    if args.secret_stdin:
        secret_text = sys.stdin.readline()
    elif sys.stdin.isatty():
        secret_text = getpass.getpass("terminal secret (base64, as printed once): ")
    else:
        raise settings.SettingsInvalid("pass --secret-stdin and pipe the secret in")
    configured = settings.validated(
        args.server,
        args.key_id,
        settings.parse_secret(secret_text),
        args.currency or settings.CURRENCY_DEFAULT,
    )
    merchant: dict[str, Any] | None = None
    if not args.offline:
        merchant = settings.prove_key(configured)
        configured = settings.with_merchant_currency(configured, merchant, args.currency)
    path = settings.save(args.home, configured)
    human = f"till configured: {configured.server_url} as {configured.key_id} ({path}, 0600)"
    offline: dict[str, Any] | None = None
    if merchant is None:
        human += "\nthe key was not checked (--offline): the first sale will check it"
    else:
        name = printable(merchant.get("name"))
        human += f"\nkey checked: it collects for {name} in {configured.currency}"
        offline, said = configure_offline(configured.client(), args.home)
        human += f"\n{said}"
    data: dict[str, Any] = {
        "server_url": configured.server_url,
        "key_id": configured.key_id,
        "path": str(path),
    }
    shown = None if merchant is None else {k: merchant.get(k) for k in MERCHANT_SHOWN}
    data |= {"currency": configured.currency, "checked": merchant is not None, "merchant": shown}
    data["offline"] = offline
    emit(args, human, data)
    return 0


def add_configure(sub: Any) -> None:
    p = sub.add_parser("configure", help="set the server URL and this terminal's key, once")
    p.add_argument("--server", required=True, help="payment server URL, e.g. https://pay.shop")
    p.add_argument("--key-id", required=True, help="key id from `paycode-server terminals create`")
    p.add_argument("--secret-stdin", action="store_true", help="read the secret from stdin")
    p.add_argument(
        "--currency",
        help="the merchant's currency (default: the one the server names; CNY with --offline)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="save without proving the key with the server (the first sale checks it)",
    )
    p.set_defaults(func=cmd_configure)


def add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="what is this code? (any QR/barcode, EMV fields)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="a photo or PNG containing codes")
    source.add_argument("--text", help="the code's text, as a scanner or keyboard gives it")
    p.set_defaults(func=cmd_inspect)
