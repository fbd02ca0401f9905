"""paycode-wallet: the consumer's wallet on the command line (BRIEF §5)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client import online, render
from client.api import ServerClient
from client.cliutil import add_json_flag, emit, run, wants_json
from client.wallet import GeneratedCode, Wallet, live_versions
from shared.errors import WalletError

PROG = "paycode-wallet"
HOME_ENV = "PAYCODE_WALLET_HOME"
SHOW_REFRESHES_MAX = 2880
"""--show stops by itself after a day of 30 s steps."""


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".paycode" / "wallet")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
    else:
        raise WalletError(
            "no password: pass --password-stdin and pipe it in", code="password_required"
        )
    if not password:
        raise WalletError("the password is empty", code="password_required")
    return password


def cmd_enroll(args: argparse.Namespace) -> int:
    versions = args.version or live_versions()
    client = ServerClient(args.server)
    wallet = Wallet.open_or_create(args.home)
    password = _read_password(args)
    result = online.enroll(wallet, client, user=args.user, password=password, versions=versions)
    enrolled = [{"version": g.version, "device_id": g.device_id} for g in result.granted]
    names = ", ".join(f"{g.version} ({g.device_id})" for g in result.granted)
    offset = f"clock offset {result.clock_offset_s:+.1f} s"
    human = f"enrolled {args.user} at {client.base_url}: {names}; {offset}"
    emit(args, human, {"enrolled": enrolled, "clock_offset_s": result.clock_offset_s})
    return 0


def _write_pngs(code: GeneratedCode, png: Path) -> list[str]:
    written = [str(png)]
    render.save_png(render.qr_image(code.text), png)
    if code.symbology == "numeric":
        barcode_path = png.with_name(png.stem + ".code128.png")
        render.save_png(render.code128_image(code.text), barcode_path)
        written.append(str(barcode_path))
    return written


def _code_data(code: GeneratedCode, files: list[str]) -> dict[str, Any]:
    return {
        "code": code.text,
        "version": code.version,
        "symbology": code.symbology,
        "refresh_in_s": round(code.refresh_in_s, 1),
        "files": files,
    }


def cmd_code(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    if args.show:
        if wants_json(args):
            raise WalletError(
                "--show draws in the terminal; it cannot be combined with --json", code="usage"
            )
        return _show_loop(wallet, args)
    code = wallet.next_code(args.version, local_now_s=time.time())
    files = _write_pngs(code, args.png) if args.png else []
    shown = render.group_digits(code.text) if code.symbology == "numeric" else code.text
    human = "\n".join([shown, *(f"wrote {name}" for name in files)])
    emit(args, human, _code_data(code, files))
    return 0


def _show_loop(wallet: Wallet, args: argparse.Namespace) -> int:
    refreshes_max = min(args.count or SHOW_REFRESHES_MAX, SHOW_REFRESHES_MAX)
    for _ in range(refreshes_max):
        code = wallet.next_code(args.version, local_now_s=time.time())
        text = (
            render.group_digits(code.text) if code.symbology == "numeric" else code.text[:24] + "…"
        )
        screen = render.terminal_qr(code.text)
        sys.stdout.write("\x1b[2J\x1b[H" + screen + "\n")
        sys.stdout.write(
            f"{code.version}  {text}\nrefreshes in {code.refresh_in_s:.0f} s (Ctrl-C to stop)\n"
        )
        sys.stdout.flush()
        time.sleep(code.refresh_in_s + 0.05)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    body = online.balance(Wallet.open(args.home))
    lines = [f"{item.get('balance')} {item.get('currency')}" for item in body.get("accounts", [])]
    emit(args, "\n".join(lines) or "no accounts", {"accounts": body.get("accounts", [])})
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    body = online.history(Wallet.open(args.home), limit=args.limit)
    items = body.get("items", [])
    columns = ("created_at", "amount", "currency", "status", "merchant")
    lines = ["  ".join(str(item.get(column, "")) for column in columns) for item in items]
    emit(args, "\n".join(lines) or "no payments yet", {"items": items})
    return 0


def cmd_pay(args: argparse.Namespace) -> int:
    # Deferred: OpenCV and zxing load in ~0.2 s, which `code` (the hot path) should not pay.
    from merchant_pos.scanner import decode_image_file  # noqa: PLC0415

    found = [d for d in decode_image_file(args.qr_image) if d.format == "qr"]
    if not found:
        raise WalletError(f"no QR code found in {args.qr_image}", code="qr_not_found")
    body = online.pay(Wallet.open(args.home), qr_payload=found[0].text, amount=args.amount)
    amount = f"{body.get('amount')} {body.get('currency')}"
    human = f"paid {amount} to {body.get('merchant')}: {body.get('status')}"
    emit(args, human, {"payment": body})
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    enrolled = {v: e.device_id for v, e in wallet.enrollments().items()}
    human = "\n".join(
        [
            f"server: {wallet.server_url or '-'}  user: {wallet.user or '-'}",
            f"clock offset: {wallet.clock_offset_s:+.1f} s",
        ]
        + [f"{version}: device {device_id}" for version, device_id in enrolled.items()]
    )
    emit(args, human, {"server": wallet.server_url, "user": wallet.user, "enrolled": enrolled})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Offline payment codes. Enroll once online; making a code needs no network.",
        epilog=f"The wallet lives in --home (default ${HOME_ENV} or ~/.paycode/wallet), "
        "encrypted with $PAYCODE_WALLET_PASSPHRASE or a 0600 secret file beside it. "
        "Errors exit 1 and name a stable code.",
    )
    parser.add_argument("--home", type=Path, default=default_home(), help="wallet directory")
    add_json_flag(parser)
    sub = parser.add_subparsers(metavar="COMMAND")
    versions = live_versions()

    p = sub.add_parser("enroll", help="provision this wallet with a server (online, once)")
    p.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:5000")
    p.add_argument("--user", required=True, help="your user name on that server")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument(
        "--version",
        action="append",
        choices=versions,
        help="code version (repeatable; default all)",
    )
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("code", help="make a fresh single-use payment code (offline)")
    p.add_argument("--version", choices=versions, help="code version (default v1, the numeric one)")
    p.add_argument(
        "--png", type=Path, help="write a QR PNG here (numeric codes also FILE.code128.png)"
    )
    p.add_argument(
        "--show", action="store_true", help="draw the QR in the terminal, refresh every step"
    )
    p.add_argument("--count", type=int, default=0, help="with --show: stop after N refreshes")
    p.set_defaults(func=cmd_code)

    sub.add_parser("balance", help="show your balances (online)").set_defaults(func=cmd_balance)
    p = sub.add_parser("history", help="show your recent payments (online)")
    p.add_argument("--limit", type=int, default=20, help="how many (1-100)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("pay", help="pay a merchant's collection QR (online)")
    p.add_argument("--qr-image", required=True, type=Path, help="photo or PNG of the merchant's QR")
    p.add_argument("--amount", help="amount as a decimal string, e.g. 12.50 (if the QR has none)")
    p.set_defaults(func=cmd_pay)

    sub.add_parser("status", help="show what this wallet is enrolled for").set_defaults(
        func=cmd_status
    )
    for action in sub.choices.values():
        add_json_flag(action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
