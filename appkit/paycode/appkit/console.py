"""What the three console scripts share: --json output, stable error codes, no tracebacks.

Every command prints a human line or, with --json, one JSON object. Errors exit non-zero and
name a stable code: `error [code]: message` on stderr, or {"ok": false, "error": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from paycode.shared.codes import ErrorCode
from paycode.shared.errors import PaycodeError, WalletError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """--json is accepted before or after the subcommand."""
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def emit(args: argparse.Namespace, human: str, data: dict[str, Any]) -> None:
    if wants_json(args):
        print(json.dumps({"ok": True, **data}, sort_keys=True))
    else:
        print(human)


def report_error(prog: str, args: argparse.Namespace | None, code: str, message: str) -> None:
    if args is not None and wants_json(args):
        print(json.dumps({"ok": False, "error": {"code": code, "message": message}}))
    else:
        print(f"{prog}: error [{code}]: {message}", file=sys.stderr)


def run(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, dispatch to args.func, and turn every failure into a stable code."""
    args = parser.parse_args(argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except PaycodeError as error:
        report_error(prog, args, error.code, error.message)
        return EXIT_ERROR
    except OSError as error:  # a file the user named cannot be read or written
        name = f": {error.filename}" if error.filename else ""
        report_error(
            prog, args, ErrorCode.IO_ERROR, f"{error.strerror or type(error).__name__}{name}"
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:  # the last line of defence: a code, never a traceback
        if os.environ.get("PAYCODE_DEBUG"):
            traceback.print_exc()
        report_error(prog, args, ErrorCode.INTERNAL_ERROR, f"unexpected {type(error).__name__}")
        return EXIT_ERROR


def confirm_or_stop(
    args: argparse.Namespace, what: str, cancelled: str = "payment cancelled; nothing was paid"
) -> None:
    """Money leaves (or a device goes) only on a yes: --yes, or typed at a terminal."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise WalletError(f"confirm with --yes to {what}", code=ErrorCode.CONFIRMATION_REQUIRED)
    answer = input(f"{what}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise WalletError(cancelled, code=ErrorCode.CANCELLED)
