"""paycode-pos: the cashier's till (BRIEF §5). This release has `inspect`; charging lands with
the server (issue 3/4)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from client.cliutil import add_json_flag, emit, run
from merchant_pos.inspect import describe
from shared.errors import PaycodeError

PROG = "paycode-pos"


class ScanError(PaycodeError):
    code = "no_code_found"


def _human(found: list[dict[str, object]]) -> str:
    lines = []
    for item in found:
        head = f"[{item.get('format', 'text')}] {item.get('kind')}"
        if item.get("version"):
            head += f" {item['version']}"
        if "well_formed" in item:
            head += (
                " (well-formed)"
                if item["well_formed"]
                else f" ({item.get('error')}: {item.get('message')})"
            )
        lines.append(f"{head}\n    {item.get('text_preview')}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.text is not None:
        found = [describe(args.text) | {"format": "text"}]
    else:
        # Deferred: OpenCV and zxing take ~0.2 s to load; --text should not pay for them.
        from merchant_pos.scanner import decode_image_file  # noqa: PLC0415

        decoded = decode_image_file(args.image)
        if not decoded:
            raise ScanError(f"no QR code or Code 128 barcode found in {args.image}")
        found = [describe(d.text) | {"format": d.format, "backend": d.backend} for d in decoded]
    emit(args, _human(found), {"codes": found})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Merchant point of sale for Paycode.")
    add_json_flag(parser)
    sub = parser.add_subparsers(metavar="COMMAND")
    p = sub.add_parser("inspect", help="what is this code? (any QR/barcode, EMV fields)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="a photo or PNG containing codes")
    source.add_argument("--text", help="the code's text, as a scanner or keyboard gives it")
    p.set_defaults(func=cmd_inspect)
    for action in sub.choices.values():
        add_json_flag(action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
