"""The one exception hierarchy of the project.

Every error a user can see carries a stable `code` (the strings of BRIEF §5) that the HTTP API,
the CLIs and the logs repeat verbatim. Messages never contain secrets or whole payment codes.

Malformed input raises one of these; a well-formed but wrong payment code is not an exception:
verification returns a `Rejected` result (see `shared.verify`).
"""

from __future__ import annotations


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

    code = "code_malformed"


class EmvFormatError(CodeMalformed):
    """An EMV payload (TLV or ID-length-value) breaks its encoding at `offset`."""

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.offset = offset


class EmvCrcError(EmvFormatError):
    """An EMV Merchant-Presented payload's CRC does not match its contents."""


class AmountInvalid(PaycodeError):
    """An amount is not a positive decimal with at most the currency's minor digits."""

    code = "amount_invalid"


class CurrencyUnknown(AmountInvalid):
    """A currency is not an ISO 4217 code we support."""


class CurrencyMismatch(PaycodeError):
    """Two amounts (or an amount and an account) have different currencies."""

    code = "currency_mismatch"


class EnrollmentInvalid(PaycodeError):
    """A provisioning message from the server is incomplete or inconsistent."""

    code = "enrollment_invalid"


class CounterExhausted(PaycodeError):
    """The device made every code it may make in this time step; the next step frees more."""

    code = "counter_exhausted"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ImageUnreadable(PaycodeError):
    """An image file is missing or is not a picture a decoder can read."""

    code = "image_unreadable"


class ServerUnreachable(PaycodeError):
    """The server did not answer (network down, refused, timed out). Nothing was learned."""

    code = "server_unreachable"


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

    code = "wallet_error"

    def __init__(self, message: str, *, code: str = "wallet_error") -> None:
        super().__init__(message)
        self.code = code


class NotPaycodeCollection(CodeMalformed):
    """A well-formed EMV merchant-presented QR of another scheme: no Paycode merchant account."""

    code = "not_paycode_collection"


class CollectionInvalid(PaycodeError, ValueError):
    """A collection code cannot be written as asked (name too long, non-ASCII city, ...).

    Also a ValueError: bad arguments to a pure builder, which callers may treat either way."""

    code = "invalid_argument"
