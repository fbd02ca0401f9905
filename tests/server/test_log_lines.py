"""The lean JSON log line (paycode.server.operations.log_lines) equals the generic rendering,
member for member and byte for byte, whatever the record carries."""

from __future__ import annotations

import json
import logging
import random
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from flask import Flask, g

from paycode.server.operations import log_lines, observability

REQUEST_FIELDS = {
    "request_id": "3f9a0c1d2e4b5a69",
    "method": "POST",
    "route": "/v1/charges",
    "status": 201,
    "duration_ms": 1.234,
    "client_addr": "127.0.0.1",
    "terminal_id": "term_0123456789abcdef",
    "outcome": "succeeded",
    "code_version": "v2",
    "payment_code": "PC2...X5EA",
    "payment_id": "pay_0123456789abcdef",
}
SEED = 22


def _record(
    created_s: float,
    *,
    fields: Any = None,
    level: int = logging.INFO,
    name: str = "paycode.request",
    msg: str = "request",
    args: tuple[Any, ...] = (),
    exc: bool = False,
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError('boom \u00e9 "quoted"')
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)
    record.created = created_s
    if fields is not None:
        record.paycode = fields
    return record


def _both(record: logging.LogRecord) -> tuple[str, str]:
    lean = log_lines.JsonFormatter().format(record)
    record.exc_text = None  # format_generic renders the traceback again
    return lean, log_lines.JsonFormatter().format_generic(record)


class _ReadOnly(Mapping[str, Any]):
    def __init__(self, items: dict[str, Any]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _timestamps() -> list[float]:
    rng = random.Random(SEED)
    edges = [0.0, 1.0, 1764979200.0, 1764979200.0005, 1764979200.9995, 1764979200.9999996]
    edges += [1764979200.9999994, 1764979199.4999995, -1.5, -0.0000004, 4102444799.999]
    return edges + [rng.uniform(0, 4102444800) for _ in range(2000)]


def test_the_timestamp_is_isoformat_to_the_millisecond() -> None:
    for created_s in _timestamps():
        lean, generic = _both(_record(created_s))
        assert json.loads(lean)["ts"] == json.loads(generic)["ts"], created_s


@pytest.mark.parametrize(
    "record",
    [
        _record(1764979200.123, fields=dict(REQUEST_FIELDS)),
        _record(1764979200.123, fields={}),
        _record(1764979200.123),
        _record(1764979200.5, level=logging.ERROR, fields={"error": "internal", "n": None}),
        _record(1764979200.5, name="gunicorn.error", msg="Booting worker with pid: %s", args=(7,)),
        _record(1764979200.5, msg='caf\u00e9 \u5317\u4eac "q" \\ \n', exc=True),
        _record(1764979200.5, fields={"odd": object(), "float": 1e-7, "list": [1, "a"]}),
        _record(1764979200.5, fields={"msg": "a field named msg", "ts": 1}),  # generic path
        _record(1764979200.5, fields={"exc": "x"}, exc=True),  # generic path
        _record(1764979200.5, fields=_ReadOnly({"a": "b"})),  # generic path
        _record(1764979200.5, fields="not a mapping"),
    ],
)
def test_lean_line_equals_the_generic_one(record: logging.LogRecord) -> None:
    lean, generic = _both(record)
    assert lean == generic
    assert list(json.loads(lean))[:5] == ["ts", "level", "logger", "pid", "msg"]


def test_inside_a_request_the_line_carries_its_request_id_once() -> None:
    app = Flask("log-lines-test")
    with app.test_request_context("/"):
        g.paycode_request_id = "req-0001"
        plain, plain_generic = _both(_record(1764979200.5, name="paycode.db", msg="slow"))
        assert plain == plain_generic and json.loads(plain)["request_id"] == "req-0001"
        own, own_generic = _both(_record(1764979200.5, fields=dict(REQUEST_FIELDS)))
        assert own == own_generic and own.count('"request_id"') == 1
        g.paycode_request_id = None
        none, none_generic = _both(_record(1764979200.5))
        assert none == none_generic and "request_id" not in json.loads(none)


def test_the_head_cache_is_bounded_and_stays_right() -> None:
    formatter = log_lines.JsonFormatter()
    for index in range(log_lines.HEADS_MAX * 2 + 3):
        record = _record(1764979200.5, name=f"paycode.logger{index}")
        assert formatter.format(record) == formatter.format_generic(record)
        assert len(formatter._heads) <= log_lines.HEADS_MAX


def test_a_secret_is_still_redacted_before_the_line_is_made() -> None:
    code = "874362462609809933982797"
    record = _record(1764979200.5, msg="saw %s", args=(code,), fields={"note": f"token={code}"})
    assert observability.RedactSecrets().filter(record)
    line = observability.JsonFormatter().format(record)
    assert code not in line and json.loads(line)["msg"] == "saw 87...2797"
    assert json.loads(line)["note"] == "token=[redacted]"
