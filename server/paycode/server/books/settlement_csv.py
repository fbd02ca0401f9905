"""The settlement file as it is written: RFC 4180 CSV (CRLF, UTF-8), a header, one line per
money movement of the day, then one total line per currency (paycode.server.books.settlement
builds and checks what is in it; docs/operations.md describes the columns)."""

from __future__ import annotations

import csv
import io
from typing import Any, Final

from paycode.server.books.settlement import Line, Settlement, Total
from paycode.server.books.settlement_points import PointsRow
from paycode.server.database.offline_models import LOSS_KIND
from paycode.shared.money import currency as lookup_currency
from paycode.shared.timestamps import iso_time

MOVEMENT: Final = "movement"
TOTAL: Final = "total"
LOSS_TOTAL: Final = "offline_loss_total"
POINTS: Final = "points"
POINTS_TOTAL: Final = "points_total"
"""Points redemptions (paycode.server.books.settlement_points): `points` signed in the points
column, their money value in amount; after the money's, never in its net."""
"""Offline losses (paycode.server.books.settlement_offline): lines and a total of their own,
after the money's, never in its net."""
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
"""Free text starting with these is prefixed with ' so a spreadsheet never runs it."""

COLUMNS: Final = (
    "record",
    "date",
    "merchant_id",
    "currency",
    "created_at",
    "ledger_transaction_id",
    "type",
    "payment_id",
    "refund_id",
    "merchant_order_id",
    "terminal_id",
    "code_version",
    "sign",
    "amount",
    "amount_minor",
    "fee",
    "fee_minor",
    "count",
    "offline_ref",
    "offline_result",
    "points",
)


def _safe_text(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _sign(amount_minor: int) -> str:
    return "debit" if amount_minor < 0 else "credit"


def _amount(amount_minor: int, currency_code: str) -> str:
    """The decimal string ("-2.50"); a day's total may exceed one payment's bound, so the
    digits are written here rather than through Money."""
    digits = lookup_currency(currency_code).minor_digits
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**digits)
    return f"{sign}{whole}.{fraction:0{digits}d}" if digits else f"{sign}{whole}"


def to_csv(settlement: Settlement) -> str:
    """RFC 4180 CSV (CRLF, UTF-8): a header, the movements, then one total line per currency."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    day = settlement.window.day.isoformat()
    for line in settlement.lines:
        writer.writerow(_movement_row(settlement.merchant_id, day, line))
    for total in settlement.totals:
        writer.writerow(_total_row(settlement.merchant_id, day, total))
    for line in settlement.losses:
        writer.writerow([LOSS_KIND, *_movement_row(settlement.merchant_id, day, line)[1:]])
    for total in settlement.loss_totals:
        writer.writerow([LOSS_TOTAL, *_total_row(settlement.merchant_id, day, total)[1:]])
    for row in settlement.points:
        writer.writerow(_points_row(settlement.merchant_id, day, row))
    for currency_code, (count, value_minor, points) in points_totals(settlement).items():
        writer.writerow([
            POINTS_TOTAL, day, settlement.merchant_id, currency_code, *[""] * 8,
            _sign(points), _amount(value_minor, currency_code), value_minor, "", "", count,
            "", "", points,
        ])  # fmt: skip
    return out.getvalue()


def points_totals(settlement: Settlement) -> dict[str, tuple[int, int, int]]:
    """Per currency of the points' value: (count, value_minor, points), each signed net."""
    totals: dict[str, tuple[int, int, int]] = {}
    for row in settlement.points:
        count, value_minor, points = totals.get(row.currency, (0, 0, 0))
        totals[row.currency] = (count + 1, value_minor + row.value_minor, points + row.points)
    return dict(sorted(totals.items()))


def _points_row(merchant_id: str, day: str, row: PointsRow) -> list[str | int]:
    return [
        POINTS,
        day,
        merchant_id,
        row.currency,
        iso_time(row.created_at_s),
        row.transaction_id,
        row.kind,
        row.payment_id,
        row.points_refund_id or "",
        _safe_text(row.merchant_order_id),
        row.terminal_id or "",
        "points",
        _sign(row.points),
        _amount(row.value_minor, row.currency),
        row.value_minor,
        "",
        "",
        "",
        "",
        "",
        row.points,
    ]


def _movement_row(merchant_id: str, day: str, line: Line) -> list[str | int]:
    return [
        MOVEMENT,
        day,
        merchant_id,
        line.currency,
        iso_time(line.created_at_s),
        line.transaction_id,
        line.kind,
        line.payment_id or "",
        line.refund_id or "",
        _safe_text(line.merchant_order_id),
        line.terminal_id or "",
        line.code_version or "",
        _sign(line.amount_minor),
        _amount(line.amount_minor, line.currency),
        line.amount_minor,
        _amount(line.fee_minor, line.currency),
        line.fee_minor,
        "",
        line.offline_ref or "",
        line.offline_result or "",
        "",
    ]


def _total_row(merchant_id: str, day: str, total: Total) -> list[str | int]:
    blank = [""] * 8
    return [
        TOTAL,
        day,
        merchant_id,
        total.currency,
        *blank,
        _sign(total.net_minor),
        _amount(total.net_minor, total.currency),
        total.net_minor,
        _amount(total.fee_minor, total.currency),
        total.fee_minor,
        total.count,
        "",
        "",
        "",
    ]


def totals_json(settlement: Settlement) -> list[dict[str, Any]]:
    return [
        {
            "currency": total.currency,
            "count": total.count,
            "net": _amount(total.net_minor, total.currency),
            "net_minor": total.net_minor,
            "fee": _amount(total.fee_minor, total.currency),
            "fee_minor": total.fee_minor,
        }
        for total in settlement.totals
    ]


def points_totals_json(settlement: Settlement) -> list[dict[str, Any]]:
    return [
        {
            "currency": currency_code,
            "count": count,
            "value": _amount(value_minor, currency_code),
            "value_minor": value_minor,
            "points": points,
        }
        for currency_code, (count, value_minor, points) in points_totals(settlement).items()
    ]


def file_name(settlement: Settlement) -> str:
    return f"settlement-{settlement.merchant_id}-{settlement.window.day.isoformat()}.csv"
