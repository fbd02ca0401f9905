"""paycode-wallet: the consumer's wallet on the command line (README, "Using the wallet")."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paycode.appkit import rendering
from paycode.appkit.console import add_json_flag, emit, printable, run, wants_json
from paycode.appkit.http_client import ServerClient
from paycode.client import online
from paycode.client.devices import revoke_replaced
from paycode.client.devices_cli import PROG, add_device_commands, advice_notice
from paycode.client.history_text import history_line
from paycode.client.mandates_cli import add_mandate_commands
from paycode.client.offline_cli import (
    add_offline_commands,
    balance_lines,
    offline_code,
    offline_code_json,
    offline_code_line,
)
from paycode.client.online import HISTORY_LIMIT_MAX
from paycode.client.online_code_cli import add_online_options, cmd_online_code
from paycode.client.pay_cli import add_pay_command
from paycode.client.pending_cli import add_pending_commands
from paycode.client.wallet import GeneratedCode, Wallet, live_versions
from paycode.shared.binding import MerchantBinding
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.collection import CollectionCode, read_collection
from paycode.shared.errors import WalletError

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
            "no password: pass --password-stdin and pipe it in", code=ErrorCode.PASSWORD_REQUIRED
        )
    if not password:
        raise WalletError("the password is empty", code=ErrorCode.PASSWORD_REQUIRED)
    return password


def cmd_enroll(args: argparse.Namespace) -> int:
    versions = args.version or live_versions()
    client = ServerClient(args.server)
    wallet = Wallet.open_or_create(args.home)
    replaced = {v: e for v, e in wallet.enrollments().items() if v in versions}
    old_server = wallet.server_url
    if replaced and not args.replace:
        listed = ", ".join(f"{v} ({e.device_id})" for v, e in sorted(replaced.items()))
        message = (
            f"this wallet is enrolled already: {listed} at {old_server}. 'paycode-wallet rotate' "
            "renews its keys without a password; 'enroll --replace' enrolls again and revokes "
            "the devices it replaces"
        )
        raise WalletError(message, code=ErrorCode.ALREADY_ENROLLED)
    password = _read_password(args)
    result = online.enroll(wallet, client, user=args.user, password=password, versions=versions)
    revoked = revoke_replaced(wallet, replaced, old_server)
    enrolled = [{"version": g.version, "device_id": g.device_id} for g in result.granted]
    names = ", ".join(f"{g.version} ({g.device_id})" for g in result.granted)
    offset = f"clock offset {result.clock_offset_s:+.1f} s"
    human = f"enrolled {args.user} at {client.base_url}: {names}; {offset}"
    if revoked:
        human += f"; revoked the replaced {', '.join(revoked)}"
    answer = {"enrolled": enrolled, "revoked": revoked, "clock_offset_s": result.clock_offset_s}
    emit(args, human, answer)
    return 0


def _write_pngs(code: GeneratedCode, png: Path) -> list[str]:
    written = [str(png)]
    rendering.save_png(rendering.qr_image(code.text), png)
    if code.symbology == "numeric":
        barcode_path = png.with_name(png.stem + ".code128.png")
        rendering.save_png(rendering.code128_image(code.text), barcode_path)
        written.append(str(barcode_path))
    return written


def _code_data(
    code: GeneratedCode, files: list[str], collection: CollectionCode | None
) -> dict[str, Any]:
    bound_to = None
    if collection is not None:
        bound_to = {
            "merchant_id": collection.merchant_id,
            "merchant_name": collection.merchant_name,
            "terminal_id": collection.terminal_id,
        }
    return {
        "code": code.text,
        "version": code.version,
        "symbology": code.symbology,
        "refresh_in_s": round(code.refresh_in_s, 1),
        "files": files,
        "bound_to": bound_to,
    }


def _collection(args: argparse.Namespace) -> CollectionCode | None:
    """The merchant's collection QR named by --bind-qr or --bind-payload, read offline."""
    payload: str | None = args.bind_payload
    if args.bind_qr is not None:
        # Deferred: OpenCV and zxing load in ~0.2 s, which an unbound `code` should not pay.
        from paycode.appkit.decoding import decode_image_file  # noqa: PLC0415

        found = [d for d in decode_image_file(args.bind_qr) if d.format == "qr"]
        if not found:
            raise WalletError(f"no QR code found in {args.bind_qr}", code=ErrorCode.QR_NOT_FOUND)
        payload = found[0].text
    return None if payload is None else read_collection(payload)


def _binding(collection: CollectionCode | None) -> MerchantBinding | None:
    if collection is None:
        return None
    try:
        return MerchantBinding(collection.merchant_id, collection.terminal_id)
    except ValueError as error:
        message = f"the collection QR names no usable merchant: {error}"
        raise WalletError(message, code=ErrorCode.QR_INVALID) from error


def _bound_line(collection: CollectionCode | None) -> list[str]:
    if collection is None:
        return []
    till = f", terminal {collection.terminal_id}" if collection.terminal_id else ""
    name = collection.merchant_name or collection.merchant_id
    return [printable(f"bound to {name} ({collection.merchant_id}{till}): pays nowhere else")]


def _clock_check(wallet: Wallet, local_now_s: float) -> None:
    """Warn on stderr (never in the --json answer) when the learned clock offset may be stale:
    a code made on a wrong clock is refused at the till as code_expired."""
    reason = wallet.clock_warning(local_now_s)
    if reason is not None:
        print(
            f"warning: {reason}; the till may refuse codes as expired: "
            f"run '{PROG} balance' (online) to re-sync",
            file=sys.stderr,
        )


def _check_count(option: str, value: int | None, most: int) -> None:
    """A count option is 1..most: a value outside is named, never clamped or ignored."""
    if value is not None and not 1 <= value <= most:
        raise WalletError(f"{option} must be between 1 and {most}", code=ErrorCode.INVALID_ARGUMENT)


def cmd_code(args: argparse.Namespace) -> int:
    if args.online:
        return cmd_online_code(args)
    if args.pin or args.pin_stdin:
        raise WalletError("--pin goes with --online", code=ErrorCode.USAGE)
    _check_count("--count", args.count, SHOW_REFRESHES_MAX)
    _check_offline_options(args)
    wallet = Wallet.open(args.home)
    _clock_check(wallet, time.time())
    collection = _collection(args)
    binding = _binding(collection)
    if args.show:
        if wants_json(args):
            raise WalletError(
                "--show draws in the terminal; it cannot be combined with --json",
                code=ErrorCode.USAGE,
            )
        return _show_loop(wallet, args, binding)
    offline_lines: list[str] = []
    offline_data: dict[str, Any] = {}
    if args.offline:
        made = offline_code(wallet, args.amount, binding, time.time())
        code = made.code
        offline_lines, offline_data = (
            [offline_code_line(made)],
            {"offline": offline_code_json(made)},
        )
    else:
        code = wallet.next_code(args.version, local_now_s=time.time(), binding=binding)
    files = _write_pngs(code, args.png) if args.png else []
    shown = rendering.group_digits(code.text) if code.symbology == "numeric" else code.text
    lines = [shown, *offline_lines, *_bound_line(collection), *(f"wrote {name}" for name in files)]
    emit(args, "\n".join(lines), _code_data(code, files, collection) | offline_data)
    return 0


def _check_offline_options(args: argparse.Namespace) -> None:
    """--offline makes a v4 code from the allowance; the options of the others do not mix."""
    if args.amount is not None and not args.offline:
        raise WalletError("--amount goes with --offline", code=ErrorCode.USAGE)
    if args.offline and args.version is not None:
        raise WalletError("--offline makes a v4 code: drop --version", code=ErrorCode.USAGE)
    if args.offline and args.show:
        # Each code reserves money from the allowance: a refresh every step would use it up.
        message = "--offline cannot --show: each offline code reserves money; make one per sale"
        raise WalletError(message, code=ErrorCode.USAGE)


def _show_loop(wallet: Wallet, args: argparse.Namespace, binding: MerchantBinding | None) -> int:
    refreshes_max = args.count or SHOW_REFRESHES_MAX
    for _ in range(refreshes_max):
        code = wallet.next_code(args.version, local_now_s=time.time(), binding=binding)
        text = (
            rendering.group_digits(code.text)
            if code.symbology == "numeric"
            else code.text[:24] + "…"
        )
        screen = rendering.terminal_qr(code.text)
        sys.stdout.write("\x1b[2J\x1b[H" + screen + "\n")
        sys.stdout.write(
            f"{code.version}  {text}\nrefreshes in {code.refresh_in_s:.0f} s (Ctrl-C to stop)\n"
        )
        sys.stdout.flush()
        time.sleep(code.refresh_in_s + 0.05)
    return 0


def _reenroll_notice(
    args: argparse.Namespace, wallet: Wallet, body: dict[str, Any]
) -> dict[str, Any]:
    """Pass on the server's advice to re-enroll: a line on stderr (stdout stays the answer),
    or a `reenroll` member with --json. Returns what to add to the JSON output."""
    return advice_notice(args, online.reenroll_of(body))


def cmd_balance(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    body = online.balance(wallet)
    lines = [
        printable(f"{item.get('balance')} {item.get('currency')}")
        for item in body.get("accounts", [])
    ]
    # Loyalty points, their own asset (never a money balance): shown only when some are held,
    # so the answer of a wallet without points is as it was.
    points = body.get("points")
    if not isinstance(points, dict) or not points.get("balance"):
        points = None
    else:
        lines.append(printable(f"{points.get('balance')} points"))
    notice = _reenroll_notice(args, wallet, body)
    held_lines, held = balance_lines(wallet, time.time())
    # `offline` only when an allowance is held: the answer of a wallet without one is as it was.
    answer = {
        "accounts": body.get("accounts", []),
        **({"points": points} if points else {}),
        **({"offline": held} if held else {}),
        **notice,
    }
    emit(args, "\n".join([*lines, *held_lines]) or "no accounts", answer)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    _check_count("--limit", args.limit, HISTORY_LIMIT_MAX)
    wallet = Wallet.open(args.home)
    body = online.history(wallet, limit=args.limit)
    items = body.get("items", [])
    lines = [history_line(item) for item in items]
    notice = _reenroll_notice(args, wallet, body)
    emit(args, "\n".join(lines) or "no payments yet", {"items": items, **notice})
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
    p.add_argument(
        "--replace",
        action="store_true",
        help="this wallet is enrolled: enroll again and revoke the devices it replaces "
        "(without it, enroll refuses; 'rotate' renews keys without a password)",
    )
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser(
        "code", help="make a fresh single-use payment code (offline; or --online: the server's)"
    )
    p.add_argument("--version", choices=versions, help="code version (default v1, the numeric one)")
    p.add_argument(
        "--png", type=Path, help="write a QR PNG here (numeric codes also FILE.code128.png)"
    )
    p.add_argument(
        "--show", action="store_true", help="draw the QR in the terminal, refresh every step"
    )
    p.add_argument(
        "--count",
        type=int,
        help=f"with --show: stop after N refreshes (1-{SHOW_REFRESHES_MAX}; default: a day)",
    )
    bind = p.add_mutually_exclusive_group()
    bind.add_argument(
        "--bind-qr",
        type=Path,
        metavar="IMAGE",
        help="bind the code to the merchant (and terminal) of this collection QR photo or PNG: "
        "it pays nowhere else (v2, v3 or --offline; needs no network)",
    )
    bind.add_argument(
        "--bind-payload",
        metavar="TEXT",
        help="like --bind-qr, from the collection QR's text (EMV payload)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="a v4 code from your offline allowance ('offline take'): a till with no line "
        "to the server can accept it. Each reserves up to what it may pay; may be bound",
    )
    p.add_argument(
        "--amount",
        help="with --offline: the most this code may pay, e.g. 12.50 (default: the most "
        "its certificate has left, within the per-payment limit)",
    )
    add_online_options(p)
    p.set_defaults(func=cmd_code)

    sub.add_parser(
        "balance", help="show your balances (online), and the offline allowance held (local)"
    ).set_defaults(func=cmd_balance)
    p = sub.add_parser("history", help="show your recent payments (online)")
    p.add_argument("--limit", type=int, default=20, help=f"how many (1-{HISTORY_LIMIT_MAX})")
    p.set_defaults(func=cmd_history)

    add_pay_command(sub)

    sub.add_parser("status", help="show what this wallet is enrolled for").set_defaults(
        func=cmd_status
    )
    add_device_commands(sub, versions)
    add_pending_commands(sub)
    add_offline_commands(sub)
    add_mandate_commands(sub)
    for action in sub.choices.values():
        add_json_flag(action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
