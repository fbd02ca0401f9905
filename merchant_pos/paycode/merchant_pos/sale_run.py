"""`paycode-pos charge` from the sale to its outcome: every way it ends is an outcome the till
prints with the order id, and an exit status (docs/pos.md "How a sale ends"):

    0   PAID
    3   NOT PAID, definitively: refused, declined, cancelled before anything was charged, or
        the server unreachable before a byte of the charge was sent
    4   OUTCOME UNKNOWN: the sale may or may not be paid; query its order id before charging
        again

Ctrl-C and SIGTERM reach the sale through merchant_pos.stopping.SaleStops.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from paycode.appkit.console import printable
from paycode.merchant_pos.messages import cashier_message, unknown_message
from paycode.merchant_pos.stopping import SaleStops
from paycode.merchant_pos.till import ConfirmWait, Sale, SaleOutcome, confirm_wait_on_stderr
from paycode.shared.codes import ErrorCode

EXIT_NOT_PAID = 3
EXIT_OUTCOME_UNKNOWN = 4
SOURCE_DEFAULT = "camera:0"

FromStdin = Callable[[Any, Sale, ConfirmWait, SaleStops], SaleOutcome]


def exit_status(outcome: SaleOutcome) -> int:
    if outcome.paid:
        return 0
    return EXIT_OUTCOME_UNKNOWN if outcome.code == ErrorCode.OUTCOME_UNKNOWN else EXIT_NOT_PAID


def run_sale(
    client: Any, sale: Sale, args: argparse.Namespace, stops: SaleStops, from_stdin: FromStdin
) -> SaleOutcome:
    """The sale's outcome, by `--present` or by scanning `--source` (`from_stdin` reads a
    barcode gun); never raises KeyboardInterrupt."""
    if args.present:
        return _present(client, sale, args, stops)
    return _scan(client, sale, args, stops, from_stdin)


def _present(client: Any, sale: Sale, args: argparse.Namespace, stops: SaleStops) -> SaleOutcome:
    """A stop while the order waits cancels it (merchant_pos.present); one that escapes (in
    the cancel itself) leaves the order's end unknown."""
    from paycode.merchant_pos.present_sale import charge_by_presenting  # noqa: PLC0415

    try:
        return charge_by_presenting(
            client,
            sale,
            wait_s=args.present_wait_s,
            headless=args.headless,
            hold_s=args.hold_s,
            windowed=args.windowed,
            screenshot_path=args.screenshot,
            settled=stops.settled,
        )
    except KeyboardInterrupt:
        return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, unknown_message(sale.order_id))


def _scan(
    client: Any, sale: Sale, args: argparse.Namespace, stops: SaleStops, from_stdin: FromStdin
) -> SaleOutcome:
    """Scan and charge. A stop before the charge is sent cancels the sale: nothing was
    charged. One after it is charge_code's, which settles the charge. The order id goes to
    stderr once the source is open (a source that fails to open is an error, not a sale)."""
    source = args.source or SOURCE_DEFAULT

    def scanning() -> None:
        said = printable(f"PAY {sale.amount} {sale.currency} (order {sale.order_id}): scanning")
        print(f"{said} {printable(source)}; Ctrl-C cancels", file=sys.stderr)

    try:
        if source == "stdin":
            scanning()
            return from_stdin(client, sale, confirm_wait_on_stderr(args.confirm_wait_s), stops)
        from paycode.merchant_pos.camera_sale import charge_from_frames  # noqa: PLC0415 - OpenCV

        args.source = source
        return charge_from_frames(client, sale, args, stops, on_scanning=scanning)
    except KeyboardInterrupt:
        return sale.outcome(False, ErrorCode.CANCELLED, cashier_message(ErrorCode.CANCELLED))
