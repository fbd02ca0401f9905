"""What the three console scripts share: --json output, stable error codes, no tracebacks.

Every command prints a human line or, with --json, one JSON object. Errors exit non-zero and
name a stable code: `error [code]: message` on stderr, or {"ok": false, "error": {...}}.
A reader that goes away early (`paycode-wallet --json history | head -1`) ends the command
quietly with status 141, what a shell reports for a command killed by SIGPIPE (128 + 13).

Human output goes through `printable`: a scanned QR, a merchant name or a server's detail is
text someone else chose, and raw control sequences in it could clear the cashier's screen and
draw a fake "PAID". JSON output is escaped by JSON itself.
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
EXIT_BROKEN_PIPE = 141

Command = Callable[[argparse.Namespace], int]

_BIDI_CONTROLS = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
"""Embeddings, overrides and isolates: they reorder what follows them on screen."""
_LINE_BREAKS = (0x2028, 0x2029)
"""Unicode line and paragraph separators: some terminals break the line on them."""
_ESCAPES: dict[int, str] = {
    **{point: f"\\x{point:02x}" for point in (*range(0x20), *range(0x7F, 0xA0))},
    **{point: f"\\u{point:04x}" for point in (*_BIDI_CONTROLS, *_LINE_BREAKS)},
}
_ESCAPES_KEEPING_NEWLINES = {point: text for point, text in _ESCAPES.items() if point != 0x0A}


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """`text` safe to print on a terminal: C0 and C1 controls (ESC among them), DEL, bidi
    overrides and Unicode line separators become visible `\\x1b` / `\\u202e` escapes;
    everything else (accents, Chinese, emoji) stays as it is. `keep_newlines` is for a text
    the program composed of several lines; a value from outside keeps its newline escaped,
    so it cannot start a line of its own."""
    table = _ESCAPES_KEEPING_NEWLINES if keep_newlines else _ESCAPES
    return str(text).translate(table)


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
        print(printable(human, keep_newlines=True))


def report_error(prog: str, args: argparse.Namespace | None, code: str, message: str) -> None:
    if args is not None and wants_json(args):
        print(json.dumps({"ok": False, "error": {"code": code, "message": message}}))
    else:
        print(f"{prog}: error [{code}]: {printable(message)}", file=sys.stderr)


def run(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, dispatch to args.func, and turn every failure into a stable code; a closed
    stdout (or stderr) ends the command quietly with EXIT_BROKEN_PIPE."""
    try:
        status = _dispatch(prog, parser, argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe would print a traceback
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return status


def _discard_stdout() -> None:
    """Point stdout at /dev/null: the interpreter flushes it once more at exit, and that
    write must not fail (and print) again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (a test captures it): nothing to flush
        return


def _dispatch(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except BrokenPipeError:  # the reader went away: nobody is left to read an error either
        raise
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
    answer = input(f"{printable(what)}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise WalletError(cancelled, code=ErrorCode.CANCELLED)
