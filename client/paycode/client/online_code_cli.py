"""paycode-wallet code --online: a code issued by the server (docs/spec.md §14), for when this
wallet cannot make one itself (its keys lost or being rotated). It needs the network: the
server makes the code with a key only it holds, in answer to a request this wallet signs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from paycode.appkit import rendering
from paycode.appkit.console import emit, printable
from paycode.client import online
from paycode.client.pending_cli import secret_line
from paycode.client.wallet import Wallet
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ServerUnreachable, WalletError

ONLINE_VERSIONS = ("v2", "v1")
"""What the server issues: the versions whose device key it can hold (not v3's)."""
OFFLINE_ONLY = ("show", "count", "bind_qr", "bind_payload", "offline", "amount")
"""`code` options that make no sense for a code the server makes: refused with --online."""


def add_online_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--online",
        action="store_true",
        help="ask the server for a code (v2 by default, or --version v1) when this wallet "
        "cannot make one: it pays once, within 60 s, and needs the network",
    )
    pin = p.add_mutually_exclusive_group()
    pin.add_argument(
        "--pin",
        action="store_true",
        help="with --online: ask for the payment PIN, so the code is marked user-verified (v2)",
    )
    pin.add_argument(
        "--pin-stdin", action="store_true", help="like --pin, reading the PIN from standard input"
    )


def cmd_online_code(args: argparse.Namespace) -> int:
    """`code --online`: print the code the server issued, and say that it did."""
    mixed = [name for name in OFFLINE_ONLY if getattr(args, name, None) not in (None, False)]
    if mixed:
        option = "--" + mixed[0].replace("_", "-")
        raise WalletError(f"--online cannot take {option}", code=ErrorCode.USAGE)
    version = args.version or ONLINE_VERSIONS[0]
    if version not in ONLINE_VERSIONS:
        raise WalletError(
            f"the server issues {' and '.join(ONLINE_VERSIONS)} codes, not {version}",
            code=ErrorCode.USAGE,
        )
    wallet = Wallet.open(args.home)
    pin = None
    if args.pin or args.pin_stdin:
        pin = secret_line("payment PIN", args.pin_stdin, ErrorCode.PIN_REQUIRED)
    try:
        issued = online.issue_code(wallet, version=version, pin=pin)
    except ServerUnreachable as error:
        raise WalletError(
            f"{error.message}: a code issued online needs the network "
            "('paycode-wallet code' without --online makes one offline)",
            code=ErrorCode.SERVER_UNREACHABLE,
        ) from error
    code = str(issued.get("code", ""))
    files = _write_pngs(code, version, args.png) if args.png else []
    shown = rendering.group_digits(code) if version == "v1" else code
    expires_in_s = issued.get("expires_in_s")
    lines = [
        printable(shown),
        f"issued by the server (online): pays once, expires in {expires_in_s} s",
        *(f"wrote {name}" for name in files),
    ]
    data: dict[str, Any] = {
        "code": code,
        "version": issued.get("version"),
        "issued_online": True,
        "user_verified": issued.get("user_verified"),
        "expires_at": issued.get("expires_at"),
        "expires_in_s": expires_in_s,
        "files": files,
    }
    emit(args, "\n".join(lines), data)
    return 0


def _write_pngs(code: str, version: str, png: Path) -> list[str]:
    """As `code --png`: a QR, and for numeric codes a Code 128 beside it."""
    rendering.save_png(rendering.qr_image(code), png)
    written = [str(png)]
    if version == "v1":
        barcode_path = png.with_name(png.stem + ".code128.png")
        rendering.save_png(rendering.code128_image(code), barcode_path)
        written.append(str(barcode_path))
    return written
