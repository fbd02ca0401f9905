"""The `bare` ceiling of bench_charges: a Flask JSON endpoint served exactly as the real app.

    python -m bench.bare_server serve --workers N --bind 127.0.0.1:PORT

It runs `paycode-server serve` itself (same gunicorn settings, same code path), with the module
gunicorn loads in each worker, `server.wsgi`, replaced by one whose `app` parses the JSON body
of POST /v1/charges and answers {"ok": true}. No database, no crypto: what is left is
gunicorn + Flask + JSON, the part of a charge no server code can avoid.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence

from flask import Flask, Response, jsonify, request

bare = Flask("bare")


@bare.post("/v1/charges")
def charge() -> Response:
    body = request.get_json()
    assert isinstance(body, dict)
    return jsonify(ok=True)


@bare.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


def main(argv: Sequence[str] | None = None) -> int:
    module = types.ModuleType("paycode.server.wsgi")
    module.app = bare  # type: ignore[attr-defined]
    sys.modules["paycode.server.wsgi"] = (
        module  # what PaycodeGunicorn.load() imports in each worker
    )
    from paycode.server import cli  # noqa: PLC0415 - after the substitution, on purpose

    return cli.main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
