"""The JSON log line: one object per line, the same members in the same order for every record.

    JsonFormatter    ts, level, logger, pid, msg, then the record's `paycode` fields; inside a
                     request, its request_id; then exc (a traceback) when there is one

Every request writes one line (paycode.server.operations.observability), so the formatter
avoids the generic way of building it: the members that depend only on the level, the logger
and the process are rendered once and kept, the timestamp's text is kept for the second it
names, and only the message, the fields and the milliseconds are encoded per line. The generic
rendering (`format_generic`) is kept as the reference the fast one must equal, and is used
for the rare record whose fields reuse a member's name (their value then takes that member's
place, as dict.update does). Redaction is not done here: RedactSecrets, the filter on every
handler, has already cleaned the record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from flask import g, has_request_context

HEADS_MAX = 256
"""Kept renderings of (level, logger, pid); more loggers than this start the cache afresh."""
SECOND_FORMAT = "%Y-%m-%dT%H:%M:%S"
BASE_MEMBERS = frozenset({"ts", "level", "logger", "pid", "msg", "exc"})
"""Members the formatter writes itself; a field with one of these names takes the slow path."""
US_PER_S = 1_000_000
US_PER_MS = 1000

_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


def _timestamp(created_s: float) -> str:
    """What dt.datetime.fromtimestamp(created_s, UTC).isoformat(timespec="milliseconds") gives,
    with "Z" for "+00:00": the microseconds rounded half-even, as fromtimestamp rounds them,
    then cut to milliseconds, as isoformat cuts them."""
    fraction, whole = math.modf(created_s)
    seconds, us = int(whole), round(fraction * US_PER_S)
    if us >= US_PER_S:
        seconds, us = seconds + 1, us - US_PER_S
    elif us < 0:  # a time before 1970: modf's parts are both negative
        seconds, us = seconds - 1, us + US_PER_S
    return f"{_second_text(seconds)}.{us // US_PER_MS:03d}Z"


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")
"""The last second rendered and its text: one tuple, replaced whole, so threads that race on
it each read a consistent pair."""


def _second_text(seconds: int) -> str:
    global _second  # noqa: PLW0603 - a one-entry cache shared by every formatter
    cached_s, text = _second
    if cached_s != seconds:
        text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime(SECOND_FORMAT)
        _second = (seconds, text)
    return text


def _request_id(fields: Mapping[str, Any] | None) -> Any:
    """This request's id, for a line logged inside a request whose fields do not carry it."""
    if (fields is not None and "request_id" in fields) or not has_request_context():
        return None
    return g.get("paycode_request_id") or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, msg, then the record's `paycode`
    fields; inside a request, its request_id."""

    def __init__(self) -> None:
        super().__init__()
        self._heads: dict[tuple[str, str, int | None], str] = {}

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "paycode", None)
        if isinstance(fields, Mapping) and (
            not isinstance(fields, dict) or not BASE_MEMBERS.isdisjoint(fields)
        ):
            return self.format_generic(record)  # rare: no logger of ours does this
        if not isinstance(fields, dict):
            fields = None
        parts = ['{"ts":"', _timestamp(record.created), self._head(record)]
        parts.append(_JSON.encode(record.getMessage()))
        if fields:
            parts += (",", _JSON.encode(fields)[1:-1])
        request_id = _request_id(fields)
        if request_id is not None:
            parts += (',"request_id":', _JSON.encode(request_id))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            parts += (',"exc":', _JSON.encode(record.exc_text))
        parts.append("}")
        return "".join(parts)

    def _head(self, record: logging.LogRecord) -> str:
        """`","level":…,"logger":…,"pid":…,"msg":`: the same for every line of a logger."""
        key = (record.levelname, record.name, record.process)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= HEADS_MAX:
                self._heads.clear()
            level, logger, pid = (_JSON.encode(part) for part in (key[0].lower(), *key[1:]))
            head = f'","level":{level},"logger":{logger},"pid":{pid},"msg":'
            self._heads[key] = head
        return head

    def format_generic(self, record: logging.LogRecord) -> str:
        """The line built the generic way (a dict, then json): the reference for format()."""
        created = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "paycode", None)
        if isinstance(fields, Mapping):
            line.update(fields)
        if "request_id" not in line and has_request_context():
            request_id = g.get("paycode_request_id")
            if request_id:
                line["request_id"] = request_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return _JSON.encode(line)
