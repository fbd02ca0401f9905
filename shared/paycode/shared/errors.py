"""The one exception hierarchy of the project.

Every error a user can see carries a stable `code` (paycode.shared.codes, docs/api.md "Stable error
codes") that the HTTP API,
the CLIs and the logs repeat verbatim. Messages never contain secrets or whole payment codes.

Malformed input raises one of these; a well-formed but wrong payment code is not an exception:
verification returns a `Rejected` result (see `shared.verify`).
"""

from __future__ import annotations

from paycode.shared.codes import HTTP_STATUS, ErrorCode


class PaycodeError(Exception):
    """Base of every error the project raises on purpose."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class CodeMalformed(PaycodeError):
    """A scanned string is not a payment code of any live version (or is corrupt)."""

    code = ErrorCode.CODE_MALFORMED


class EmvFormatError(CodeMalformed):
    """An EMV payload (TLV or ID-length-value) breaks its encoding at `offset`."""

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.offset = offset


class EmvCrcError(EmvFormatError):
    """An EMV Merchant-Presented payload's CRC does not match its contents."""


class AmountInvalid(PaycodeError):
    """An amount is not a positive decimal with at most the currency's minor digits."""

    code = ErrorCode.AMOUNT_INVALID


class CurrencyUnknown(AmountInvalid):
    """A currency is not an ISO 4217 code we support."""


class ConfigError(PaycodeError):
    """The server's configuration (environment, key files) cannot be used as it is."""

    code = ErrorCode.CONFIG_INVALID


class CurrencyMismatch(PaycodeError):
    """Two amounts (or an amount and an account) have different currencies."""

    code = ErrorCode.CURRENCY_MISMATCH


class EnrollmentInvalid(PaycodeError):
    """A provisioning message from the server is incomplete or inconsistent."""

    code = ErrorCode.ENROLLMENT_INVALID


class WeakKey(PaycodeError):
    """A public key is non-canonical, not a curve point, or of small order (docs/spec.md §6.1)."""

    code = ErrorCode.WEAK_KEY


class CounterExhausted(PaycodeError):
    """The device made every code it may make in this time step; the next step frees more."""

    code = ErrorCode.COUNTER_EXHAUSTED

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ImageUnreadable(PaycodeError):
    """An image file is missing or is not a picture a decoder can read."""

    code = ErrorCode.IMAGE_UNREADABLE


class ImageTooLarge(PaycodeError):
    """An image file (or a video's frames) has more pixels than a picture of a code needs:
    refused from its header, before a decoder allocates them."""

    code = ErrorCode.IMAGE_TOO_LARGE


class ServerUnreachable(PaycodeError):
    """The server did not answer (network down, refused, timed out). Nothing was learned."""

    code = ErrorCode.SERVER_UNREACHABLE


class ServerNotReached(ServerUnreachable):
    """No connection was made (refused, no route, unknown host): not a byte of the request
    left, so the server cannot have acted on it. Every other ServerUnreachable may have been
    received and acted on."""


class ServerRejected(PaycodeError):
    """The server answered with an RFC 9457 problem; `code` is the server's stable code.

    `clock_offset_s` (server time - local time) is what the answer taught about the clock: a
    refusal for a wrong clock is exactly when the wallet must learn the server's."""

    def __init__(
        self, code: str, message: str, *, status: int, clock_offset_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.clock_offset_s = clock_offset_s


class WalletError(PaycodeError):
    """The local wallet cannot do what was asked (not enrolled, wrong passphrase, corrupt)."""

    code = ErrorCode.WALLET_ERROR

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.WALLET_ERROR) -> None:
        super().__init__(message)
        self.code = code


class NotPaycodeCollection(CodeMalformed):
    """A well-formed EMV merchant-presented QR of another scheme: no Paycode merchant account."""

    code = ErrorCode.NOT_PAYCODE_COLLECTION


class CollectionInvalid(PaycodeError, ValueError):
    """A collection code cannot be written as asked (name too long, non-ASCII city, ...).

    Also a ValueError: bad arguments to a pure builder, which callers may treat either way."""

    code = ErrorCode.INVALID_ARGUMENT


class ApiError(PaycodeError):
    """A request the server refuses with a stable code: raised anywhere while a request is
    served, turned into an RFC 9457 problem by the server (paycode.server.http.problems), with
    the code's HTTP status unless `status` says otherwise."""

    def __init__(self, code: ErrorCode, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status or HTTP_STATUS.get(code, 400)
