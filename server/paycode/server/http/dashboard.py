"""/dashboard: the merchant's own web page (server-rendered, no script).

Log in with the merchant's dashboard password (paycode.server.dashboard.access); see the day's
volume,
attempts per hour, outcomes and the latest payments; refund one; download a settlement file.
Every change is a POST carrying the session's CSRF token; a refund form also carries what it
saw refunded, so a double-submitted form refunds once (paycode.server.books.refunds).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for

from paycode.server.books import refunds, settlement, settlement_csv
from paycode.server.dashboard import access, chart, overview
from paycode.server.database.engine import db
from paycode.server.database.models import Merchant
from paycode.server.safety.guard import AttemptRefused
from paycode.server.safety.limits import LimitSettings
from paycode.server.services import config
from paycode.shared.codes import HTTP_STATUS, ErrorCode
from paycode.shared.errors import ApiError

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="../templates",
    static_folder="../static",
    static_url_path="/static",
)

PAYMENT_ID = re.compile(r"[a-z]{2,4}_[0-9a-f]{1,28}")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@bp.after_request
def _harden(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _limits() -> LimitSettings:
    return config().limits


def _cookie() -> str | None:
    return request.cookies.get(access.COOKIE_NAME)


def _logged_in(now_s: float) -> str | None:
    with db.transaction() as session:
        return access.session_merchant(session, _cookie(), now_s)


def _to_login() -> Response:
    response = redirect(url_for("dashboard.login_page"))
    response.delete_cookie(access.COOKIE_NAME, path=bp.url_prefix)
    return response  # type: ignore[return-value]


# -- log in / out -----------------------------------------------------------------------------


@bp.get("/login")
def login_page() -> Response | str:
    if _logged_in(time.time()) is not None:
        return redirect(url_for("dashboard.overview_page"))  # type: ignore[return-value]
    return render_template("dashboard/login.html", name="", problem=None)


@bp.post("/login")
def login() -> Response | tuple[str, int]:
    now_s = time.time()
    name = request.form.get("name", "")[: access.NAME_CHARS_MAX].strip()
    password = request.form.get("password", "")
    if "\x00" in name:  # no shop has it, and PostgreSQL refuses NUL in a string
        return render_template("dashboard/login.html", name="", problem=access.WRONG_LOGIN), 400
    scopes = access.login_scopes(name, request.remote_addr)
    try:
        with db.transaction() as session:
            access.reserve_login(session, scopes, now_s)
            found = access.find_login(session, name)
    except AttemptRefused as refused:
        detail = f"too many wrong passwords: try again in {max(1, round(refused.wait_s))} s"
        return render_template("dashboard/login.html", name=name, problem=detail), 429
    try:
        merchant_id = access.check_password(found, password)
    except ApiError as error:
        with db.transaction() as session:
            access.settle_login(session, scopes, now_s, right=False)
        return render_template("dashboard/login.html", name=name, problem=error.message), 401
    with db.transaction() as session:
        access.settle_login(session, scopes, now_s, right=True)
    with db.transaction() as session:
        opened = access.open_session(session, merchant_id, now_s)
    response: Response = redirect(url_for("dashboard.overview_page"))  # type: ignore[assignment]
    response.set_cookie(
        access.COOKIE_NAME,
        opened.token,
        max_age=access.SESSION_TTL_S,
        path=bp.url_prefix or "/",
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    token = _cookie()
    if token and access.csrf_valid(token, request.form.get("csrf")):
        with db.transaction() as session:
            access.close_session(session, token)
    return _to_login()


# -- the page ---------------------------------------------------------------------------------


def _day(text: str | None, now_s: float) -> dt.date:
    if text:
        return settlement.parse_day(text)
    return settlement.EPOCH + dt.timedelta(days=_limits().day(now_s))


def _clock(at_s: float) -> str:
    zone = dt.timezone(dt.timedelta(minutes=_limits().day_offset_minutes))
    return dt.datetime.fromtimestamp(at_s, tz=zone).strftime("%H:%M:%S")


def _render(merchant_id: str, now_s: float, **extra: Any) -> str:
    problem = extra.pop("problem", None)
    try:
        day = _day(request.args.get("day"), now_s)
    except ApiError as error:
        day, problem = _day(None, now_s), error.message
    window = settlement.day_window(day, _limits())
    with db.transaction() as session:
        merchant = session.get(Merchant, merchant_id)
        assert merchant is not None, "a session belongs to a merchant"
        found = overview.overview(session, merchant_id, window)
    return render_template(
        "dashboard/overview.html",
        merchant=merchant,
        overview=found,
        chart=chart.hourly(found.per_hour),
        outcome_shares=chart.shares([outcome.count for outcome in found.outcomes]),
        csrf=access.csrf_token(_cookie() or ""),
        clock=_clock,
        today=_day(None, now_s).isoformat(),
        utc_offset=_utc_offset(),
        problem=problem,
        **extra,
    )


def _utc_offset() -> str:
    minutes = _limits().day_offset_minutes
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@bp.get("/")
def overview_page() -> Response | str:
    now_s = time.time()
    merchant_id = _logged_in(now_s)
    if merchant_id is None:
        return _to_login()
    refunded = request.args.get("refunded", "")
    notice = f"Refund recorded for {refunded}." if PAYMENT_ID.fullmatch(refunded) else None
    return _render(merchant_id, now_s, notice=notice)


@bp.post("/payments/<payment_id>/refund")
def refund(payment_id: str) -> Response | tuple[str, int]:
    now_s = time.time()
    token = _cookie()
    merchant_id = _logged_in(now_s)
    if token is None or merchant_id is None:
        return _to_login()
    if not access.csrf_valid(token, request.form.get("csrf")):
        return _render(merchant_id, now_s, problem="the form expired: reload the page"), 403
    try:
        seen_minor = _whole_number(request.form.get("refunded_seen_minor"))
        amount = request.form.get("amount", "").strip()
        with db.transaction() as session:
            refunds.refund(
                session,
                merchant_id,
                payment_id,
                {"amount": amount} if amount else {},
                now_s,
                refunded_seen_minor=seen_minor,
            )
    except ApiError as error:
        status = HTTP_STATUS.get(error.code, 400)
        return _render(merchant_id, now_s, problem=error.message), status
    done = url_for("dashboard.overview_page", refunded=payment_id[:32])
    return redirect(done, code=303)  # type: ignore[return-value]


def _whole_number(text: str | None) -> int:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ApiError(ErrorCode.INVALID_REQUEST, "the form is incomplete: reload the page")
    return int(text)


@bp.get("/settlement.csv")
def settlement_file() -> Response | tuple[str, int]:
    now_s = time.time()
    merchant_id = _logged_in(now_s)
    if merchant_id is None:
        return _to_login()
    try:
        found = settlement.for_merchant(
            db.engine, merchant_id, request.args.get("date"), _limits(), config().settlement
        )
    except ApiError as error:
        status = HTTP_STATUS.get(error.code, 400)
        return _render(merchant_id, now_s, problem=error.message), status
    response = Response(settlement_csv.to_csv(found), mimetype="text/csv")
    name = settlement_csv.file_name(found)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
