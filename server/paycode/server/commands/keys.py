"""paycode-server versions | keys: code-version lifecycle, master-key rotation, QR keys (the
hiding and seal keys: paycode.server.commands.code_keys)."""

from __future__ import annotations

import argparse
import time

from paycode.appkit.console import emit
from paycode.server.commands.code_keys import add_code_key_commands
from paycode.server.commands.common import (
    CliError,
    Subparsers,
)
from paycode.server.commands.common import (
    config as _config,
)
from paycode.server.commands.common import (
    session as _session,
)
from paycode.server.operations import lifecycle
from paycode.server.safety import keyring, offline_keys, qr_keys, rotation
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.versions.base import VersionStatus
from paycode.shared.versions.registry import PREFERRED_VERSION, VERSIONS

VERSION_ACTIONS = {
    "activate": VersionStatus.ACTIVE,
    "deprecate": VersionStatus.DEPRECATED,
    "retire": VersionStatus.RETIRED,
}
BATCH_ROWS_MAX = 10_000


def cmd_versions(args: argparse.Namespace) -> int:
    """The code versions with their live lifecycle status (the database's, not the default)."""
    with _session(_config()) as session:
        states = {state.version: state for state in lifecycle.read_states(session)}
    rows = [
        {
            "version": codec.version,
            "status": str(states[codec.version].status),
            "changed_at_s": states[codec.version].changed_at_s,
            "symbology": codec.symbology,
            "prefix": codec.prefix,
            "preferred": codec.version == PREFERRED_VERSION,
        }
        for codec in VERSIONS
    ]
    lines = [
        f"{r['version']}  {r['status']:<10} {r['symbology']:<8} prefix {str(r['prefix'])[:12]}"
        + ("  (preferred)" if r["preferred"] else "")
        for r in rows
    ]
    emit(args, "\n".join(lines), {"versions": rows})
    return 0


def cmd_versions_set(args: argparse.Namespace) -> int:
    """deprecate | retire | activate: every server applies it within lifecycle.STATUSES_TTL_S."""
    status = VERSION_ACTIONS[args.action]
    with _session(_config()) as session:
        change = lifecycle.set_status(session, args.version, status, time.time())
        target = lifecycle.reenroll_target(lifecycle.read_statuses(session))
    effect = {
        VersionStatus.ACTIVE: "its codes pay as usual",
        VersionStatus.DEPRECATED: f"its codes still pay; wallets are told to re-enroll on {target}",
        VersionStatus.RETIRED: "its codes are refused with version_retired",
    }[status]
    state = f"{change.before} -> {change.after}" if change.changed else f"already {status}"
    within = f"every server within {lifecycle.STATUSES_TTL_S:.0f} s"
    human = f"{args.version}: {state}; {effect} ({within})"
    data = {
        "version": args.version,
        "before": str(change.before),
        "status": str(change.after),
        "changed": change.changed,
    }
    emit(args, human, data)
    return 0


def cmd_keys_status(args: argparse.Namespace) -> int:
    """Which master key ids the configuration holds and how many rows each one seals."""
    config = _config()
    with _session(config) as session:
        usage = rotation.key_usage(session)
    configured = sorted(config.master_keys)
    lines = [f"current master key: {config.master_key_id} (configured: {', '.join(configured)})"]
    lines += [
        f"{table:<12} " + (" ".join(f"{k}={n}" for k, n in sorted(ids.items())) or "no rows")
        for table, ids in usage.items()
    ]
    missing = sorted({key_id for ids in usage.values() for key_id in ids} - set(configured))
    if missing:
        lines.append(f"not configured, their rows cannot be opened: {', '.join(missing)}")
    data = {
        "current_key_id": config.master_key_id,
        "configured_key_ids": configured,
        "missing_key_ids": missing,
        "rows": usage,
        "not_current": rotation.not_current(usage, config.master_key_id),
    }
    emit(args, "\n".join(lines), data)
    return 0


def cmd_keys_rotate_master(args: argparse.Namespace) -> int:
    """Re-wrap every sealed secret under the new (current) master key; resumable."""
    if not 1 <= args.batch_rows <= BATCH_ROWS_MAX:
        raise CliError(ErrorCode.INVALID_ARGUMENT, f"--batch-rows must be 1-{BATCH_ROWS_MAX}")
    if args.batches_max < 1:
        raise CliError(ErrorCode.INVALID_ARGUMENT, "--batches-max must be at least 1")
    config = _config()
    if args.new_key_id != config.master_key_id:
        raise CliError(
            ErrorCode.MASTER_KEY_NOT_CURRENT,
            f"PAYCODE_MASTER_KEY_ID is {config.master_key_id!r}, not {args.new_key_id[:16]!r}: "
            "configure the new key and make it current first (docs/operations.md)",
        )
    with _session(config) as session:
        report = rotation.rotate_master(
            session,
            SecretBox.from_config(config),
            batch_rows=args.batch_rows,
            batches_max=args.batches_max,
        )
    counts = " ".join(f"{table}={n}" for table, n in report.rewrapped.items())
    if not report.complete:
        left = " ".join(f"{table}={n}" for table, n in report.remaining.items())
        raise CliError(
            ErrorCode.ROTATION_INCOMPLETE,
            f"re-wrapped {counts}; still under older keys: {left}; run the command again",
        )
    human = (
        f"re-wrapped {counts} under {report.key_id}; no secret is sealed under another key. "
        "Remove the old key from the configuration once every server runs with "
        f"PAYCODE_MASTER_KEY_ID={report.key_id}."
    )
    emit(args, human, {"key_id": report.key_id, "rewrapped": report.rewrapped, "complete": True})
    return 0


def cmd_keys_qr(args: argparse.Namespace) -> int:
    """The QR signing keys: the newest live one signs; every live one verifies."""
    with _session(_config()) as session:
        rows = qr_keys.key_rows(session)
    lines = [f"{row['key_id']}  " + ("retired" if row["retired_at_s"] else "live") for row in rows]
    emit(args, "\n".join(lines) or "no QR key: run init-db", {"keys": rows})
    return 0


def cmd_keys_rotate_qr(args: argparse.Namespace) -> int:
    config = _config()
    with _session(config) as session:
        key_id = qr_keys.add_key(session, SecretBox.from_config(config), time.time())
    human = (
        f"new QR signing key {key_id}: new posters and orders are signed with it within "
        f"{keyring.KEYS_TTL_S:g} s; old posters still pay until you retire their key "
        "(keys retire-qr); wallets learn the new key at their next payment"
    )
    emit(args, human, {"key_id": key_id})
    return 0


def cmd_keys_retire_qr(args: argparse.Namespace) -> int:
    with _session(_config()) as session:
        try:
            qr_keys.retire_key(session, args.key_id, time.time())
        except ApiError as error:
            raise CliError(ErrorCode(error.code), error.message) from error
    emit(
        args,
        f"retired {args.key_id}: posters signed with it no longer pay",
        {"key_id": args.key_id},
    )
    return 0


def cmd_keys_offline(args: argparse.Namespace) -> int:
    """The offline keys: `next` is published to tills, `signing` signs, `old` verifies."""
    config = _config()
    with _session(config) as session:
        rows = offline_keys.key_rows(
            session,
            SecretBox.from_config(config),
            now_s=time.time(),
            publish_s=config.offline.key_publish_s,
        )
    lines = [f"{row['key_id']}  {row['status']}" for row in rows]
    emit(args, "\n".join(lines) or "no offline key: run init-db", {"keys": rows})
    return 0


def cmd_keys_rotate_offline(args: argparse.Namespace) -> int:
    config = _config()
    with _session(config) as session:
        key_id = offline_keys.add_key(session, SecretBox.from_config(config), time.time())
    human = (
        f"new offline key {key_id}: tills fetch it now and it signs certificates after "
        f"{config.offline.key_publish_s} s; retire the old one (keys retire-offline) once its "
        "certificates can no longer settle"
    )
    emit(args, human, {"key_id": key_id, "signs_after_s": config.offline.key_publish_s})
    return 0


def cmd_keys_retire_offline(args: argparse.Namespace) -> int:
    config = _config()
    with _session(config) as session:
        try:
            offline_keys.retire_key(
                session,
                SecretBox.from_config(config),
                args.key_id,
                now_s=time.time(),
                grace_s=config.offline.grace_s,
                force=args.force,
            )
        except ApiError as error:
            raise CliError(ErrorCode(error.code), error.message) from error
    human = (
        f"retired {args.key_id}: certificates it signed are refused by the server now and by "
        "each till at its next key fetch"
    )
    emit(args, human, {"key_id": args.key_id})
    return 0


def _add_offline_key_commands(keys: Subparsers) -> list[argparse.ArgumentParser]:
    listing = keys.add_parser("offline", help="the keys that sign offline certificates")
    listing.set_defaults(func=cmd_keys_offline)
    rotate = keys.add_parser(
        "rotate-offline", help="a new offline key: published now, signing after the publish time"
    )
    rotate.set_defaults(func=cmd_keys_rotate_offline)
    retire = keys.add_parser("retire-offline", help="certificates signed with this key stop paying")
    retire.add_argument("key_id", help="8 hex characters (keys offline lists them)")
    retire.add_argument(
        "--force",
        action="store_true",
        help="retire even while its certificates can settle (a leaked key: they are refused)",
    )
    retire.set_defaults(func=cmd_keys_retire_offline)
    return [listing, rotate, retire]


def add_lifecycle_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    versions = sub.add_parser("versions", help="list code versions, or change one's lifecycle")
    versions.set_defaults(func=cmd_versions)
    actions = versions.add_subparsers(metavar="ACTION")
    leaves = []
    for action, status in VERSION_ACTIONS.items():
        leaf = actions.add_parser(action, help=f"mark a code version {status}")
        leaf.add_argument("version", help="v1, v2, v3, ...")
        leaf.set_defaults(func=cmd_versions_set, action=action)
        leaves.append(leaf)
    keys_parser = sub.add_parser("keys", help="master, code (hiding, seal), QR and offline keys")
    keys = keys_parser.add_subparsers(metavar="ACTION")
    status = keys.add_parser("status", help="configured master keys and the rows each one seals")
    status.set_defaults(func=cmd_keys_status)
    rotate = keys.add_parser(
        "rotate-master", help="re-wrap every sealed secret under the new master key (resumable)"
    )
    rotate.add_argument("--new-key-id", required=True, help="must be PAYCODE_MASTER_KEY_ID")
    rotate.add_argument("--batch-rows", type=int, default=rotation.BATCH_ROWS, help="per commit")
    rotate.add_argument(
        "--batches-max", type=int, default=rotation.BATCHES_MAX, help="per table, then stop"
    )
    rotate.set_defaults(func=cmd_keys_rotate_master)
    qr = keys.add_parser("qr", help="the keys that sign merchant QR payloads (posters, orders)")
    qr.set_defaults(func=cmd_keys_qr)
    rotate_qr = keys.add_parser(
        "rotate-qr", help="a new QR signing key; old posters pay until their key is retired"
    )
    rotate_qr.set_defaults(func=cmd_keys_rotate_qr)
    retire_qr = keys.add_parser("retire-qr", help="posters signed with this key stop paying")
    retire_qr.add_argument("key_id", help="sk_... (keys qr lists them)")
    retire_qr.set_defaults(func=cmd_keys_retire_qr)
    code = add_code_key_commands(keys)
    offline = _add_offline_key_commands(keys)
    return [*leaves, status, rotate, qr, rotate_qr, retire_qr, *code, *offline]
