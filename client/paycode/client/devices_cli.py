"""paycode-wallet devices | revoke | rotate | reenroll (client.devices does the calls)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from paycode.appkit.console import confirm_or_stop, emit, printable, wants_json
from paycode.client import devices, online
from paycode.client.wallet import Wallet
from paycode.shared.errors import ServerUnreachable

PROG = "paycode-wallet"


def advice_notice(args: argparse.Namespace, advice: online.Reenroll | None) -> dict[str, Any]:
    if advice is None:
        return {}
    if not wants_json(args):
        print(
            printable(f"notice: {advice.reason}; re-enroll on {advice.version}: {PROG} reenroll"),
            file=sys.stderr,
        )
    return {"reenroll": {"version": advice.version, "reason": advice.reason}}


def _device_line(item: dict[str, Any]) -> str:
    own = item.get("this_wallet")
    state = f"revoked {item.get('revoked_at')}" if item.get("revoked") else "live"
    status = item.get("version_status")
    version = devices.printable(item.get("version"), 8)
    if status not in (None, "active"):
        version += f" ({devices.printable(status, 16)})"
    marks = [f"this wallet's {own}"] if isinstance(own, str) else []
    if item.get("current"):
        marks.append("signed this request")
    fields = [
        ("*" if own else " ") + " " + devices.printable(item.get("device_id"), 32),
        version,
        state,
        f"created {devices.printable(item.get('created_at'), 24)}",
        devices.printable(item.get("label", "")),
    ]
    return "  ".join(field for field in fields if field) + (
        f"  ({', '.join(marks)})" if marks else ""
    )


def cmd_devices(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    listing = devices.list_devices(wallet)
    notice = advice_notice(args, listing.reenroll)
    human = "\n".join(_device_line(item) for item in listing.items) or "no devices"
    emit(args, human, {"devices": listing.items, **notice})
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    device_id = devices.check_device_id(args.device_id)
    version = devices.own_version(wallet, device_id)
    what = f"revoke device {device_id}"
    if version is not None:
        what += f", this wallet's own {version} device (it is removed from this wallet too"
        alone = len(wallet.enrollments()) == 1
        what += "; none will be left: re-enroll with your password)" if alone else ")"
    confirm_or_stop(args, what, cancelled="nothing was revoked")
    done = devices.revoke(wallet, device_id)
    state = "was already revoked" if done.already_revoked else "revoked"
    removed = f"; removed {done.removed_version} from this wallet" if done.removed_version else ""
    emit(args, f"device {device_id} {state}{removed}", done.as_json())
    return 0


def _unreachable_midway(error: ServerUnreachable) -> ServerUnreachable:
    return ServerUnreachable(
        f"{error.message}; this wallet keeps its old key and the request: run the same "
        "command again to finish"
    )


def _rotation_line(move: devices.Rotation) -> str:
    onto = "" if move.new_version == move.version else f" on {move.new_version}"
    return f"{move.version}: new device {move.new_device_id}{onto}; {move.old_device_id} revoked"


def cmd_rotate(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    try:
        rotated = devices.rotate(wallet, args.version)
    except ServerUnreachable as error:
        raise _unreachable_midway(error) from error
    human = "\n".join(_rotation_line(move) for move in rotated)
    emit(args, human or "nothing to rotate", {"rotated": [move.as_json() for move in rotated]})
    return 0


def cmd_reenroll(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    try:
        done = devices.reenroll(wallet)
    except ServerUnreachable as error:
        raise _unreachable_midway(error) from error
    lines = [_rotation_line(move) for move in done.rotated] + [
        f"{drop.removed_version}: device {drop.device_id} revoked (this wallet has the advised "
        "version already)"
        for drop in done.dropped
    ]
    human = "\n".join(lines) or "nothing to re-enroll: every device here is on an active version"
    emit(args, human, done.as_json())
    return 0


def add_device_commands(sub: Any, versions: list[str]) -> None:
    sub.add_parser(
        "devices",
        help="list your devices on every phone (online); * marks this wallet's",
        description="List your devices: one per enrolled code version on each phone. "
        "* marks this wallet's own; revoked ones are listed after the live ones.",
    ).set_defaults(func=cmd_devices)
    p = sub.add_parser(
        "revoke",
        help="revoke one of your devices, e.g. a lost phone's (online)",
        description="Revoke one of your devices: its codes and signatures stop working at "
        "once. One of this wallet's own devices is removed from this wallet too. Another "
        "user's device, or an unknown id, is not_found.",
    )
    p.add_argument("device_id", metavar="DEVICE_ID", help="as 'devices' lists it (dev_...)")
    p.add_argument("--yes", action="store_true", help="revoke without asking to confirm")
    p.set_defaults(func=cmd_revoke)
    p = sub.add_parser(
        "rotate",
        help="new keys for this wallet's devices; the old ones are revoked (online)",
        description="Replace each enrolled device (or the --version one) by a new one with a "
        "fresh key, and revoke the old one, with no password. The old key is kept until "
        "the new one is saved; after an interruption, run the command again.",
    )
    p.add_argument(
        "--version", action="append", choices=versions, help="only this version (repeatable)"
    )
    p.set_defaults(func=cmd_rotate)
    sub.add_parser(
        "reenroll",
        help="move off deprecated or retired code versions, as the server advises (online)",
        description="Follow the server's re-enrollment advice: each of this wallet's devices "
        "on a deprecated or retired version is replaced by one on the advised version (or "
        "only revoked, when this wallet has that version already). No password needed.",
    ).set_defaults(func=cmd_reenroll)
