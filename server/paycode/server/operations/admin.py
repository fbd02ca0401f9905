"""Operator services behind `paycode-server` (users, top-ups, merchants, terminals, devices).
The worker's purge is paycode.server.operations.purge.

Each takes an open Session and the time, and leaves committing to the caller, so the CLI and the
tests run the same code. Failures raise ApiError with a stable code. Duplicates are decided by
the database's UNIQUE constraints (IntegrityError inside a savepoint), never by check-then-insert,
so two operators racing on one name get one row and one `*_exists` error.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from typing import Final
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.database.models import (
    DEFAULT_CITY,
    DEFAULT_COUNTRY,
    Account,
    Device,
    Merchant,
    Terminal,
    User,
    new_id,
)
from paycode.server.notifications import destinations
from paycode.server.operations import merchant_names
from paycode.server.operations.merchant_names import (
    EMV_CITY_CHARS_MAX,
    EMV_NAME_CHARS_MAX,
    INFERRED_SCRIPTS,
    is_ascii_text,
)
from paycode.server.safety.passwords import PasswordInvalid, hash_password
from paycode.server.safety.secretbox import SecretBox
from paycode.server.wallets import devices
from paycode.shared.codes import ErrorCode
from paycode.shared.credentials import password_problem
from paycode.shared.errors import ApiError, CurrencyUnknown
from paycode.shared.money import currency as lookup_currency
from paycode.shared.money import parse_amount
from paycode.shared.terminal_auth import SECRET_BYTES

DAILY_COUNT_MAX: Final = 1_000_000

USER_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MERCHANT_NAME_CHARS_MAX: Final = 64
CITY_CHARS_MAX: Final = 15
ALLOWED_NETWORKS_MAX: Final = 32
NOTIFY_URL_CHARS_MAX: Final = 512
ID_CHARS_MAX: Final = 64


def _now(now_s: float | None) -> float:
    return time.time() if now_s is None else now_s


def check_user_name(name: str) -> str:
    """Names are what users type into the wallet's --user: short, ASCII, no spaces."""
    if not isinstance(name, str) or USER_NAME_PATTERN.fullmatch(name) is None:
        raise ApiError(
            ErrorCode.NAME_INVALID, "a user name has 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return name


def check_merchant_name(name: str) -> str:
    """Merchant names are shown to consumers ("Corner Cafe"): printable, trimmed, 1-64 chars."""
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MERCHANT_NAME_CHARS_MAX
        or not name.isprintable()
        or name != name.strip()
    ):
        raise ApiError(
            ErrorCode.NAME_INVALID,
            f"a merchant name has 1-{MERCHANT_NAME_CHARS_MAX} printable characters, "
            "without leading or trailing spaces",
        )
    return name


def check_currency(code: str) -> str:
    """The ISO 4217 alpha code for `code` (alpha or numeric); `currency_unknown` otherwise."""
    try:
        return lookup_currency(code).alpha
    except CurrencyUnknown as error:
        raise ApiError(ErrorCode.CURRENCY_UNKNOWN, error.message) from error


def check_notify_url(url: str, *, allow_private: bool = False) -> str:
    """Notifications are POSTed to this URL, so only absolute http(s) URLs are stored, and
    unless `allow_private` (PAYCODE_NOTIFY_ALLOW_PRIVATE) none whose host is a loopback,
    private or link-local address (paycode.server.notifications.destinations)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if (
        parts is None
        or len(url) > NOTIFY_URL_CHARS_MAX
        or parts.scheme not in {"http", "https"}
        or not parts.hostname
        or not url.isprintable()
        or " " in url
    ):
        raise ApiError(
            ErrorCode.NOTIFY_URL_INVALID,
            f"the notify URL must be an absolute http(s) URL of at most {NOTIFY_URL_CHARS_MAX} "
            "characters",
        )
    if not allow_private and destinations.literal_refused(parts.hostname or ""):
        raise ApiError(ErrorCode.NOTIFY_URL_INVALID, destinations.REFUSED)
    return url


def create_user(
    session: Session, name: str, password: str, currency: str, *, now_s: float | None = None
) -> User:
    """A wallet user with a scrypt password hash and an empty account in `currency`."""
    check_user_name(name)
    alpha = check_currency(currency)
    problem = password_problem(password)
    if problem is not None:
        raise ApiError(ErrorCode.PASSWORD_INVALID, problem)
    try:
        password_hash = hash_password(password)
    except PasswordInvalid as error:
        raise ApiError(ErrorCode.PASSWORD_INVALID, str(error)) from error
    user = User(id=new_id("usr"), name=name, password_hash=password_hash, created_at_s=_now(now_s))
    _insert_unique(session, user, ErrorCode.USER_EXISTS, f"a user named {name!r} already exists")
    ledger.open_account(session, "user", user.id, alpha)
    return user


def _insert_unique(session: Session, row: object, code: ErrorCode, detail: str) -> None:
    """Insert `row` in a savepoint; a UNIQUE violation becomes ApiError(code)."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as error:
        raise ApiError(code, detail, status=409) from error


def find_user(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.name == name[:ID_CHARS_MAX])).one_or_none()
    if user is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no user named {name[:ID_CHARS_MAX]!r}")
    return user


def default_currency(session: Session, name: str) -> str:
    """The currency of the user's first account: what a top-up without --currency means."""
    user = find_user(session, name)
    first = session.scalars(
        select(Account.currency)
        .where(Account.owner_kind == "user", Account.owner_id == user.id)
        .order_by(Account.id)
        .limit(1)
    ).first()
    if first is None:
        raise ApiError(
            ErrorCode.CURRENCY_REQUIRED, f"user {name!r} has no account; name a currency"
        )
    return first


def top_up(
    session: Session, name: str, amount_text: str, now_s: float, currency: str | None = None
) -> int:
    """Credit a user from the system funding account; returns the new balance in minor units.

    A currency the user has no account in yet opens one (a user may hold several currencies).
    """
    user = find_user(session, name)
    alpha = check_currency(currency) if currency else default_currency(session, name)
    amount = parse_amount(amount_text, alpha)  # AmountInvalid: code amount_invalid
    funding = ledger.system_account(session, alpha)
    account = ledger.open_account(session, "user", user.id, alpha)
    ledger.transfer(
        session,
        kind="top_up",
        debit=funding,
        credit=account,
        amount_minor=amount.amount_minor,
        now_s=now_s,
    )
    balance = ledger.balance_minor(session, account.id)
    assert balance >= amount.amount_minor
    return balance


def set_limits(
    session: Session,
    name: str,
    currency: str,
    *,
    payment_max: str | None,
    daily_max: str | None,
    daily_count_max: int | None,
    reset: bool,
) -> None:
    """Set a user's own password-free limits in one currency (paycode.server.safety.limits); `reset`
    first returns all three to the server defaults. Zero is allowed: every payment asks."""
    user = find_user(session, name)
    account = ledger.account(session, "user", user.id, check_currency(currency))
    if account is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"{name} has no {currency} account")
    if reset:
        account.pinless_payment_max_minor = None
        account.pinless_daily_max_minor = None
        account.pinless_daily_count_max = None
    if payment_max is not None:
        account.pinless_payment_max_minor = parse_amount(
            payment_max, currency, allow_zero=True
        ).amount_minor
    if daily_max is not None:
        account.pinless_daily_max_minor = parse_amount(
            daily_max, currency, allow_zero=True
        ).amount_minor
    if daily_count_max is not None:
        if not 0 <= daily_count_max <= DAILY_COUNT_MAX:
            raise ApiError(ErrorCode.INVALID_ARGUMENT, f"--daily-count must be 0-{DAILY_COUNT_MAX}")
        account.pinless_daily_count_max = daily_count_max
    session.flush()


def check_city(city: str) -> str:
    """EMV tag 60 allows 15 characters; a poster's wallet shows it under the name."""
    if not 1 <= len(city) <= CITY_CHARS_MAX or not city.isprintable() or city != city.strip():
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT, f"a city has 1-{CITY_CHARS_MAX} printable characters"
        )
    return city


def check_country(country: str) -> str:
    if len(country) != 2 or not (country.isascii() and country.isalpha() and country.isupper()):
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT, "a country is an ISO 3166 alpha-2 code such as CN"
        )
    return country


def check_networks(cidrs: list[str]) -> str | None:
    """The allow-list as stored (canonical, comma-separated), or None for 'anywhere'."""
    if not cidrs:
        return None
    if len(cidrs) > ALLOWED_NETWORKS_MAX:
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT, f"at most {ALLOWED_NETWORKS_MAX} --allow-ip networks"
        )
    try:
        networks = [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs]
    except ValueError as error:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"--allow-ip: {error}") from error
    return ",".join(str(network) for network in networks)


def create_merchant(
    session: Session,
    name: str,
    currency: str,
    notify_url: str | None = None,
    *,
    city: str = DEFAULT_CITY,
    country: str = DEFAULT_COUNTRY,
    allow_ips: list[str] | None = None,
    ascii_name: str | None = None,
    ascii_city: str | None = None,
    language: str | None = None,
    now_s: float | None = None,
    allow_private_notify: bool = False,
) -> Merchant:
    """A merchant with an empty settlement account in `currency`.

    `name` and `city` may be in any script. EMV tags 59 and 60 take printable ASCII, so a name
    or city that is not ASCII also gets an ASCII form, `ascii_name` / `ascii_city` when the
    operator gives it and transliterated otherwise (paycode.server.operations.merchant_names),
    and a `language` (ISO 639-1, inferred from the script when it can be): the original then
    travels in the language template 64, whose name holds 25 characters and city 15. The three
    columns stay NULL for a merchant whose name and city are ASCII."""
    check_merchant_name(name)
    alpha = check_currency(currency)
    url = None
    if notify_url is not None:
        url = check_notify_url(notify_url, allow_private=allow_private_notify)
    city = check_city(city)
    emv = emv_names(name, city, ascii_name=ascii_name, ascii_city=ascii_city, language=language)
    merchant = Merchant(
        id=new_id("mch"),
        name=name,
        currency=alpha,
        city=city,
        country=check_country(country),
        notify_url=url,
        allowed_cidrs=check_networks(allow_ips or []),
        ascii_name=emv[0],
        ascii_city=emv[1],
        language=emv[2],
        created_at_s=_now(now_s),
    )
    _insert_unique(
        session, merchant, ErrorCode.MERCHANT_EXISTS, f"a merchant named {name!r} exists"
    )
    ledger.open_account(session, "merchant", merchant.id, alpha)
    return merchant


def emv_names(
    name: str, city: str, *, ascii_name: str | None, ascii_city: str | None, language: str | None
) -> tuple[str | None, str | None, str | None]:
    """(ascii_name, ascii_city, language) as stored: each NULL where it is not needed."""
    name_is_ascii, city_is_ascii = is_ascii_text(name), is_ascii_text(city)
    if not name_is_ascii and len(name) > EMV_NAME_CHARS_MAX:
        raise ApiError(
            ErrorCode.NAME_INVALID,
            f"a merchant name that is not ASCII has at most {EMV_NAME_CHARS_MAX} characters "
            f"(EMV tag 64/01); {name!r} has {len(name)}",
        )
    for option, given, is_ascii in (
        ("--ascii-name", ascii_name, name_is_ascii),
        ("--ascii-city", ascii_city, city_is_ascii),
    ):
        if given is not None and is_ascii:
            what = "name" if option == "--ascii-name" else "city"
            raise ApiError(
                ErrorCode.INVALID_ARGUMENT,
                f"{option} is for a {what} that is not ASCII; this one is its own EMV {what}",
            )
    if name_is_ascii and city_is_ascii:
        if language is not None:
            raise ApiError(
                ErrorCode.INVALID_ARGUMENT,
                "--language is for a name or city that is not ASCII (EMV tag 64/00)",
            )
        return None, None, None
    found = (
        check_language(language)
        if language is not None
        else merchant_names.infer_language(name, city)
    )
    if found is None:
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT,
            f"name the language of {name if not name_is_ascii else city!r} with --language "
            f"(ISO 639-1, e.g. FR): it is inferred only from {INFERRED_SCRIPTS}",
        )
    return (
        None if name_is_ascii else _ascii_form("name", name, ascii_name, found),
        None if city_is_ascii else _ascii_form("city", city, ascii_city, found),
        found,
    )


def check_language(language: str) -> str:
    """ISO 639-1, stored in capitals as EMV 64/00 carries it."""
    if not (len(language) == 2 and language.isascii() and language.isalpha()):
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT, "a language is an ISO 639-1 code such as ZH, JA or KO"
        )
    return language.upper()


def _ascii_form(what: str, text: str, given: str | None, language: str) -> str:
    """The operator's ASCII form of `text`, checked, or its transliteration."""
    chars_max = EMV_NAME_CHARS_MAX if what == "name" else EMV_CITY_CHARS_MAX
    code = ErrorCode.NAME_INVALID if what == "name" else ErrorCode.INVALID_ARGUMENT
    if given is None:
        written = merchant_names.transliterate(text, language, chars_max, city=what == "city")
        if not written:
            raise ApiError(
                code, f"{text!r} has nothing to transliterate to ASCII: give --ascii-{what}"
            )
        return written
    if not (is_ascii_text(given) and 1 <= len(given) <= chars_max and given == given.strip()):
        raise ApiError(
            code,
            f"--ascii-{what} has 1-{chars_max} printable ASCII characters (EMV tag "
            f"{'59' if what == 'name' else '60'}), without leading or trailing spaces",
        )
    return given


def find_merchant(session: Session, name_or_id: str) -> Merchant:
    """By id first, then by name: an id is unambiguous, a name is what operators remember."""
    key = name_or_id[:ID_CHARS_MAX]
    merchant = (
        session.get(Merchant, key)
        or session.scalars(select(Merchant).where(Merchant.name == key)).one_or_none()
    )
    if merchant is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no merchant with id or name {key!r}")
    return merchant


def create_terminal(
    session: Session, box: SecretBox, merchant_name_or_id: str, now_s: float
) -> tuple[Terminal, bytes]:
    """A POS key: (terminal, raw secret). The secret is stored only sealed; show it once."""
    merchant = find_merchant(session, merchant_name_or_id)
    secret = os.urandom(SECRET_BYTES)
    terminal_id = new_id("term")
    key_id, sealed = box.seal(secret, row_id=terminal_id)
    terminal = Terminal(
        id=terminal_id,
        merchant_id=merchant.id,
        key_id=key_id,
        secret_sealed=sealed,
        created_at_s=now_s,
    )
    session.add(terminal)
    session.flush()
    return terminal, secret


TERMINALS_LISTED_MAX: Final = 1000


def revoke_terminal(session: Session, key_id: str, now_s: float) -> Terminal:
    """Stop accepting a terminal's signatures at once (a lost or stolen till): every worker
    checks revoked_at_s inside its transaction, whatever it has cached. Revoking twice is
    harmless and keeps the first time."""
    key = key_id[:ID_CHARS_MAX]
    session.execute(
        update(Terminal)
        .where(Terminal.id == key, Terminal.revoked_at_s.is_(None))
        .values(revoked_at_s=now_s),
        execution_options={"synchronize_session": False},
    )
    terminal = session.get(Terminal, key, populate_existing=True)
    if terminal is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no terminal {key!r}")
    return terminal


def list_terminals(session: Session, merchant_name_or_id: str) -> list[Terminal]:
    """A merchant's terminals, live ones first, newest first (no secrets); at most
    TERMINALS_LISTED_MAX."""
    merchant = find_merchant(session, merchant_name_or_id)
    query = (
        select(Terminal)
        .where(Terminal.merchant_id == merchant.id)
        .order_by(Terminal.revoked_at_s.is_not(None), Terminal.created_at_s.desc())
        .limit(TERMINALS_LISTED_MAX)
    )
    return list(session.scalars(query).all())


def revoke_device(session: Session, device_id: str, now_s: float) -> bool:
    """Stop accepting a device's codes and signatures. True if this call revoked it, False if
    it already was (revoking twice is harmless, and the first time is kept)."""
    device = session.get(Device, device_id[:ID_CHARS_MAX])
    if device is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no device {device_id[:ID_CHARS_MAX]!r}")
    return devices.revoke(session, device, now_s)


def list_devices(session: Session, user_name: str, limit: int) -> list[Device]:
    """A user's devices for the operator: live ones first, then the most recently revoked."""
    if not 1 <= limit <= devices.DEVICES_LIMIT_MAX:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"--limit must be 1-{devices.DEVICES_LIMIT_MAX}")
    return devices.user_devices(session, find_user(session, user_name).id, limit)
