"""paycode-server: operator commands (BRIEF §5). This release lists the code versions; the
HTTP server, database and admin commands land with issue 3."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from client.cliutil import add_json_flag, emit, run
from shared.versions.registry import DEFAULT_STATUS, PREFERRED_VERSION, VERSIONS

PROG = "paycode-server"


def cmd_versions(args: argparse.Namespace) -> int:
    rows = [
        {
            "version": codec.version,
            "status": str(DEFAULT_STATUS[codec.version]),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Paycode payment server (operator).")
    add_json_flag(parser)
    sub = parser.add_subparsers(metavar="COMMAND")
    sub.add_parser("versions", help="list the live code versions").set_defaults(func=cmd_versions)
    for action in sub.choices.values():
        add_json_flag(action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
