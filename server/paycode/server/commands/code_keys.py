"""paycode-server keys code | rotate-hiding | retire-hiding | rotate-seal | retire-seal: the
keys codes are made with (docs/spec.md §7, docs/operations.md "Rotating the code keys")."""

from __future__ import annotations

import argparse
import datetime
import time

from paycode.appkit.console import emit
from paycode.server.commands.common import CliError, Subparsers
from paycode.server.commands.common import config as _config
from paycode.server.commands.common import session as _session
from paycode.server.safety import code_keys, keyring
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

HIDING_VERSIONS = ("v1", "v2")
DAY_S = 86400.0
GRACE_DAYS_MAX = 3650


def _typed(error: ApiError) -> CliError:
    return CliError(ErrorCode(error.code), error.message)


def _utc(at_s: float) -> str:
    return datetime.datetime.fromtimestamp(at_s, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_keys_code(args: argparse.Namespace) -> int:
    """The hiding and seal keys: every live one verifies; wallets get the newest."""
    with _session(_config()) as session:
        rows = code_keys.key_rows(session)
    lines = [
        f"{row['version']}  {row['key_id']}  created {_utc(float(str(row['created_at_s'])))}  "
        + ("retired" if row["retired_at_s"] else "live")
        for row in rows
    ]
    emit(args, "\n".join(lines) or "no code key: run init-db", {"keys": rows})
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    config = _config()
    now_s = time.time()
    with _session(config) as session:
        try:
            key_id = code_keys.add_key(session, SecretBox.from_config(config), args.version, now_s)
        except ApiError as error:
            raise _typed(error) from error
    retire_at_s = now_s + code_keys.GRACE_S_DEFAULT
    human = (
        f"new {args.version} key {key_id}: every server verifies with it within "
        f"{keyring.KEYS_TTL_S:g} s, and hands it to wallets at their next signed online call "
        f"from {keyring.HANDOUT_DELAY_S:g} s on; codes made with the old key still pay. "
        f"Retire the old key after the grace, from {_utc(retire_at_s)} "
        f"(keys {args.retire_command} --version {args.version})"
    )
    emit(args, human, {"version": args.version, "key_id": key_id, "retire_from_s": retire_at_s})
    return 0


def cmd_keys_retire(args: argparse.Namespace) -> int:
    if not 0 <= args.grace_days <= GRACE_DAYS_MAX:
        raise CliError(ErrorCode.INVALID_ARGUMENT, f"--grace-days must be 0-{GRACE_DAYS_MAX}")
    grace_s = max(args.grace_days * DAY_S, code_keys.GRACE_S_MIN)
    with _session(_config()) as session:
        try:
            retired = code_keys.retire_old(session, args.version, time.time(), grace_s)
        except ApiError as error:
            raise _typed(error) from error
    human = (
        f"retired {', '.join(retired)}: within {keyring.KEYS_TTL_S:g} s no server accepts "
        f"{args.version} codes made with it; a wallet not online since the rotation has its "
        "codes refused (code_invalid) until its next online call (balance) teaches it the new key"
    )
    emit(args, human, {"version": args.version, "retired": retired})
    return 0


def _version_argument(parser: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    parser.add_argument(
        "--version", required=True, choices=choices, help="the code version whose key it is"
    )


def add_code_key_commands(keys: Subparsers) -> list[argparse.ArgumentParser]:
    listing = keys.add_parser("code", help="the hiding (v1, v2) and seal (v3) keys, live or not")
    listing.set_defaults(func=cmd_keys_code)
    leaves = [listing]
    for kind, versions in (("hiding", HIDING_VERSIONS), ("seal", ("v3",))):
        rotate = keys.add_parser(
            f"rotate-{kind}",
            help=f"a new {kind} key, live next to the old one; wallets pick it up online",
            description=(
                f"Make a new {kind} key for a code version. Every server verifies codes made "
                f"with either key within {keyring.KEYS_TTL_S:g} s; wallets are given the new "
                f"key at their next signed online call (balance, history, devices, pay). At "
                f"most {code_keys.LIVE_KEYS_MAX} keys are live per version: retire the old one "
                f"with retire-{kind} after the grace."
            ),
        )
        _version_argument(rotate, versions)
        rotate.set_defaults(func=cmd_keys_rotate, retire_command=f"retire-{kind}")
        retire = keys.add_parser(
            f"retire-{kind}",
            help=f"retire the old {kind} key once the new one has been live for the grace",
            description=(
                f"Retire every {kind} key of the version but the newest. Refused until the "
                "newest has been live for the grace: codes made with a retired key no longer "
                "pay, so a wallet not online since the rotation cannot pay until it is."
            ),
        )
        _version_argument(retire, versions)
        retire.add_argument(
            "--grace-days",
            type=float,
            default=code_keys.GRACE_S_DEFAULT / DAY_S,
            help="how long the new key must have been live (default %(default)g; 0 after a "
            "leaked key, still at least a few minutes)",
        )
        retire.set_defaults(func=cmd_keys_retire)
        leaves += [rotate, retire]
    return leaves
