"""/v1/notifications: the merchant's requery of notifications its endpoint has not taken yet.

Notifications are delivered at least once by `paycode-server worker`; a merchant whose
endpoint was down asks here which payments it may not have heard about, and reads each one as
it stands now. Terminal-signed, like /v1/payments.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from paycode.server.charge import planning
from paycode.server.database.engine import db
from paycode.server.http.signed_requests import authenticate_terminal
from paycode.server.notifications import events
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.timestamps import iso_time

bp = Blueprint("notifications", __name__, url_prefix="/v1/notifications")

OLDER_THAN_S_DEFAULT = 300
OLDER_THAN_S_MAX = 30 * 86_400


def _older_than_s() -> int:
    raw = request.args.get("older_than_s")
    if raw is None:
        return OLDER_THAN_S_DEFAULT
    if not raw.isascii() or not raw.isdigit() or int(raw) > OLDER_THAN_S_MAX:
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"older_than_s must be whole seconds, 0-{OLDER_THAN_S_MAX}"
        )
    return int(raw)


@bp.get("/undelivered")
def undelivered() -> Response:
    """This merchant's events still undelivered `older_than_s` after they happened."""
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        older_than_s = _older_than_s()
        rows = events.undelivered(
            session, terminal.merchant_id, older_than_s=older_than_s, now_s=now_s
        )
        items = [
            {
                "event_id": event.event_id,
                "event_type": event.event_type,
                "created_at": iso_time(event.created_at_s),
                "state": events.state_of(event),
                "attempts": event.attempts,
                "last_error": event.last_error,
                "payment": planning.payment_json(payment),
            }
            for event, payment in rows
        ]
    return jsonify(items=items, older_than_s=older_than_s, server_time=now_s)
