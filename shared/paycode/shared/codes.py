"""The stable codes and statuses every part of Paycode speaks, defined once.

`ErrorCode` is every code a user, a till or a program may branch on: the `code` of an API
problem (docs/api.md, "Stable error codes", with the HTTP status of `HTTP_STATUS`), and the
codes the wallet, the till and the server's commands print (`error [code]: message`).
`PaymentStatus` is a payment's `status`. Both are `StrEnum`s: a member is its string, so it is
written to JSON, the database and logs as the code itself, and a code read back from any of
them compares equal to its member.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class ErrorCode(enum.StrEnum):
    """Stable codes; docs/api.md says what each means."""

    # -- the request -----------------------------------------------------------------------
    INVALID_REQUEST = "invalid_request"
    INVALID_ARGUMENT = "invalid_argument"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    # -- payment codes ---------------------------------------------------------------------
    CODE_MALFORMED = "code_malformed"
    CODE_INVALID = "code_invalid"
    CODE_EXPIRED = "code_expired"
    CODE_REPLAYED = "code_replayed"
    CODE_AMBIGUOUS = "code_ambiguous"
    VERSION_RETIRED = "version_retired"
    MERCHANT_MISMATCH = "merchant_mismatch"
    DEVICE_REVOKED = "device_revoked"
    DEVICE_LOCKED = "device_locked"
    ALREADY_ENROLLED = "already_enrolled"
    BINDING_UNSUPPORTED = "binding_unsupported"
    # -- offline codes (docs/offline.md §4.2) ------------------------------------------------
    CERTIFICATE_INVALID = "certificate_invalid"
    """A v4 code's certificate: unknown server key, or its signature fails."""
    CERTIFICATE_EXPIRED = "certificate_expired"
    """A v4 code's certificate is outside its validity window."""
    CERTIFICATE_RETURNED = "certificate_returned"
    """The certificate was handed back, or its user was offline-blocked (denied)."""
    OFFLINE_CODE_NEEDED = "offline_code_needed"
    """The till is offline and the code is not v4: ask for an OFFLINE code."""
    OFFLINE_NOT_READY = "offline_not_ready"
    """The till holds no offline keys, or too old a copy: go online once."""
    OFFLINE_LIMIT = "offline_limit"
    """Above the floor limit, a code's amount limit, or its certificate's caps at this till."""
    SPLIT_SALE = "split_sale"
    """One sale, one offline payment: a second one for the same sale or certificate is refused."""
    OFFLINE_TILL_FULL = "offline_till_full"
    """The till's unsynced offline sales reached their bound: go online to sync first."""
    OFFLINE_EXHAUSTED = "offline_exhausted"
    """The wallet's allowance has no certificate left that covers the amount."""
    OFFLINE_NONE = "offline_none"
    """The wallet holds no live offline allowance."""
    OFFLINE_EXPIRED = "offline_expired"
    """Every offline certificate the wallet holds is outside its validity window."""
    OFFLINE_ANSWER_INVALID = "offline_answer_invalid"
    """The server's allowance answer does not match the request: nothing of it is kept."""
    OFFLINE_PENDING = "offline_pending"
    """An allowance request of another amount awaits its answer: finish it first."""
    # -- offline allowances and settlement (docs/offline.md §2, §6) -------------------------
    OFFLINE_AMOUNT_INVALID = "offline_amount_invalid"
    OFFLINE_ALLOWANCE_LIVE = "offline_allowance_live"
    OFFLINE_DAILY_LIMIT = "offline_daily_limit"
    OFFLINE_BLOCKED = "offline_blocked"
    """An over-spent allowance blocked the user's offline payments until an operator clears it."""
    ALLOWANCE_NOT_LIVE = "allowance_not_live"
    """The offline allowance was already handed back or swept: nothing is left to return."""
    OFFLINE_OUT_OF_ORDER = "offline_out_of_order"
    """An acceptance whose seq is not the till's last + 1: send the earlier ones first."""
    OFFLINE_CHAIN_BROKEN = "offline_chain_broken"
    """An acceptance whose prev hash is not the till's last line's."""
    # -- keys a device or the server hands over (docs/spec.md §6.1) -------------------------
    WEAK_KEY = "weak_key"
    KEY_PROOF_INVALID = "key_proof_invalid"
    # -- money -----------------------------------------------------------------------------
    AMOUNT_INVALID = "amount_invalid"
    CURRENCY_MISMATCH = "currency_mismatch"
    CURRENCY_UNKNOWN = "currency_unknown"
    CURRENCY_REQUIRED = "currency_required"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    LIMIT_EXCEEDED = "limit_exceeded"
    DUPLICATE_ORDER = "duplicate_order"
    REFUND_EXCEEDS_PAYMENT = "refund_exceeds_payment"
    PAYMENT_NOT_REFUNDABLE = "payment_not_refundable"
    PAYMENT_CHANGED = "payment_changed"
    AMOUNT_MISMATCH = "amount_mismatch"
    """A payment for the sale's order carries another amount or currency than the sale."""
    # -- points mandates (docs/spec.md §16) ------------------------------------------------
    MANDATE_INVALID = "mandate_invalid"
    """A mandate's consent fields are missing or out of range (caps, rate, expiry)."""
    MANDATE_SIGNATURE_INVALID = "mandate_signature_invalid"
    """The consent's signature does not verify under the calling device's key."""
    MANDATE_REVOKED = "mandate_revoked"
    MANDATE_EXPIRED = "mandate_expired"
    MANDATE_PAYMENT_CAP = "mandate_payment_cap"
    """More points than the mandate allows in one payment."""
    MANDATE_DAY_CAP = "mandate_day_cap"
    """More points than the mandate has left today."""
    POINTS_INVALID = "points_invalid"
    """Points not a whole number in range, not an exact number of minor units at the rate, or
    worth more than the amount."""
    INSUFFICIENT_POINTS = "insufficient_points"
    # -- confirmation above the password-free limits (step-up) -----------------------------
    CONFIRMATION_REQUIRED = "confirmation_required"
    CONFIRMATION_EXPIRED = "confirmation_expired"
    PAYMENT_NOT_PENDING = "payment_not_pending"
    PIN_INVALID = "pin_invalid"
    PIN_NOT_SET = "pin_not_set"
    PIN_REQUIRED = "pin_required"
    DECLINED_BY_CUSTOMER = "declined_by_customer"
    CANCELLED_BY_MERCHANT = "cancelled_by_merchant"
    # -- merchant QR -----------------------------------------------------------------------
    QR_INVALID = "qr_invalid"
    QR_NOT_FOUND = "qr_not_found"
    NOT_PAYCODE_COLLECTION = "not_paycode_collection"
    ORDER_EXPIRED = "order_expired"
    ORDER_CANCELLED = "order_cancelled"
    # -- hosted checkout and payment links (docs/spec.md §15) ---------------------------------
    RETURN_URL_INVALID = "return_url_invalid"
    """A checkout's return_url is not an absolute https URL the server can sign a return to."""
    # -- accounts and operators ------------------------------------------------------------
    PASSWORD_INVALID = "password_invalid"  # noqa: S105 - a code, not a password
    PASSWORD_REQUIRED = "password_required"  # noqa: S105 - a code, not a password
    PASSWORD_MISMATCH = "password_mismatch"  # noqa: S105 - a code, not a password
    NAME_INVALID = "name_invalid"
    USER_EXISTS = "user_exists"
    MERCHANT_EXISTS = "merchant_exists"
    DATE_INVALID = "date_invalid"
    LEDGER_MISMATCH = "ledger_mismatch"
    SETTLEMENT_TOO_LARGE = "settlement_too_large"
    NOTIFY_URL_INVALID = "notify_url_invalid"
    CONFIG_INVALID = "config_invalid"
    MASTER_KEY_INVALID = "master_key_invalid"
    MASTER_KEY_MISSING = "master_key_missing"
    MASTER_KEY_NOT_CURRENT = "master_key_not_current"
    ROTATION_INCOMPLETE = "rotation_incomplete"
    VERSION_UNKNOWN = "version_unknown"
    VERSION_PREFERRED = "version_preferred"
    LAST_ACTIVE_VERSION = "last_active_version"
    DATABASE_ERROR = "database_error"
    # -- the server itself -----------------------------------------------------------------
    INTERNAL_ERROR = "internal_error"
    DATABASE_BUSY = "database_busy"
    METRICS_UNAVAILABLE = "metrics_unavailable"
    # -- the wallet and the till, on their side --------------------------------------------
    SERVER_UNREACHABLE = "server_unreachable"
    OUTCOME_UNKNOWN = "outcome_unknown"
    ENROLLMENT_INVALID = "enrollment_invalid"
    NOT_ENROLLED = "not_enrolled"
    COUNTER_EXHAUSTED = "counter_exhausted"
    WALLET_ERROR = "wallet_error"
    WALLET_CORRUPT = "wallet_corrupt"
    WALLET_LOCKED = "wallet_locked"
    CANCELLED = "cancelled"
    USAGE = "usage"
    IMAGE_UNREADABLE = "image_unreadable"
    IMAGE_TOO_LARGE = "image_too_large"
    IO_ERROR = "io_error"
    POS_NOT_CONFIGURED = "pos_not_configured"
    OFFLINE_LOG_DAMAGED = "offline_log_damaged"
    """A line before the last of the till's offline log is bad: no offline sale, no sync."""
    SOURCE_INVALID = "source_invalid"
    SOURCE_UNAVAILABLE = "source_unavailable"
    SCAN_TIMEOUT = "scan_timeout"
    NO_PAYMENT_CODE = "no_payment_code"
    NO_CODE_FOUND = "no_code_found"


HTTP_STATUS: Mapping[str, int] = MappingProxyType(
    {
        ErrorCode.INVALID_REQUEST: 400,
        ErrorCode.CODE_MALFORMED: 400,
        ErrorCode.QR_INVALID: 400,
        ErrorCode.AMOUNT_INVALID: 400,
        ErrorCode.PASSWORD_INVALID: 400,
        ErrorCode.DATE_INVALID: 400,
        ErrorCode.WEAK_KEY: 400,
        ErrorCode.KEY_PROOF_INVALID: 400,
        ErrorCode.RETURN_URL_INVALID: 400,  # hosted checkout
        ErrorCode.UNAUTHORIZED: 401,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.PIN_INVALID: 403,
        ErrorCode.PIN_REQUIRED: 403,  # a wallet payment above the password-free limits
        ErrorCode.NOT_FOUND: 404,
        ErrorCode.METHOD_NOT_ALLOWED: 405,
        ErrorCode.USER_EXISTS: 409,
        ErrorCode.MERCHANT_EXISTS: 409,
        ErrorCode.IDEMPOTENCY_CONFLICT: 409,
        ErrorCode.IDEMPOTENCY_IN_PROGRESS: 409,
        ErrorCode.DUPLICATE_ORDER: 409,
        ErrorCode.ORDER_CANCELLED: 409,
        ErrorCode.ORDER_EXPIRED: 409,
        ErrorCode.PIN_NOT_SET: 409,
        ErrorCode.PAYMENT_NOT_PENDING: 409,
        ErrorCode.CONFIRMATION_EXPIRED: 409,
        ErrorCode.PAYMENT_CHANGED: 409,
        ErrorCode.LEDGER_MISMATCH: 409,  # the settlement does not add up: `reconcile`
        ErrorCode.PAYLOAD_TOO_LARGE: 413,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
        ErrorCode.CODE_INVALID: 422,
        ErrorCode.CODE_EXPIRED: 422,
        ErrorCode.CODE_REPLAYED: 422,
        ErrorCode.CODE_AMBIGUOUS: 422,
        ErrorCode.VERSION_RETIRED: 422,
        ErrorCode.DEVICE_REVOKED: 422,
        ErrorCode.MERCHANT_MISMATCH: 422,
        ErrorCode.INSUFFICIENT_FUNDS: 422,
        ErrorCode.DEVICE_LOCKED: 422,
        ErrorCode.LIMIT_EXCEEDED: 422,
        ErrorCode.CURRENCY_MISMATCH: 422,
        ErrorCode.REFUND_EXCEEDS_PAYMENT: 422,
        ErrorCode.PAYMENT_NOT_REFUNDABLE: 422,
        ErrorCode.SETTLEMENT_TOO_LARGE: 422,
        ErrorCode.CERTIFICATE_INVALID: 422,
        ErrorCode.CERTIFICATE_EXPIRED: 422,
        ErrorCode.CERTIFICATE_RETURNED: 422,
        ErrorCode.OFFLINE_AMOUNT_INVALID: 422,
        ErrorCode.OFFLINE_ALLOWANCE_LIVE: 422,
        ErrorCode.OFFLINE_DAILY_LIMIT: 422,
        ErrorCode.OFFLINE_BLOCKED: 422,
        ErrorCode.ALLOWANCE_NOT_LIVE: 409,
        ErrorCode.OFFLINE_OUT_OF_ORDER: 409,
        ErrorCode.OFFLINE_CHAIN_BROKEN: 409,
        # points mandates (docs/spec.md §16)
        ErrorCode.MANDATE_INVALID: 400,
        ErrorCode.POINTS_INVALID: 400,
        ErrorCode.MANDATE_REVOKED: 409,
        ErrorCode.MANDATE_EXPIRED: 409,
        ErrorCode.MANDATE_SIGNATURE_INVALID: 422,
        ErrorCode.MANDATE_PAYMENT_CAP: 422,
        ErrorCode.MANDATE_DAY_CAP: 422,
        ErrorCode.INSUFFICIENT_POINTS: 422,
        ErrorCode.CONFIRMATION_REQUIRED: 202,  # not an error: the charge waits for the PIN
        ErrorCode.RATE_LIMITED: 429,
        ErrorCode.INTERNAL_ERROR: 500,
        ErrorCode.DATABASE_BUSY: 503,
    }
)
"""The HTTP status of every code the server answers with; the others never cross HTTP."""


class PaymentStatus(enum.StrEnum):
    """A payment's `status` (docs/api.md)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """`failure_code` says why; no money moved."""
    PENDING_CONFIRMATION = "pending_confirmation"
    """Above the password-free limits: waits for the customer's PIN."""
    DECLINED = "declined"
    CANCELLED = "cancelled"
