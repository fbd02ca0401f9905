// Typed errors of the wallet core. Every error carries a stable `code` (the codes of
// docs/api.md, "Stable error codes", and the wallet-side codes such as binding_unsupported),
// so the app branches on `code`, never on the message. Messages never hold key material.

/** Base of every error the core raises on purpose: `code` is a stable string. */
export class PaycodeError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'PaycodeError';
    this.code = code;
    this.detail = message;
  }
}

/** A caller passed something the function cannot take (a wrong size, a bad range). */
export function invalidArgument(message) {
  return new PaycodeError('invalid_argument', message);
}

/**
 * An EMV payload (MPM text or BER-TLV) breaks its encoding at `offset` (docs/spec.md §12).
 * The offset counts characters (Unicode code points) of the payload, as the Python reader
 * does, and is repeated in the message ("at offset N").
 */
export class EmvFormatError extends PaycodeError {
  constructor(message, offset) {
    super('code_malformed', `${message} (at offset ${offset})`);
    this.name = 'EmvFormatError';
    this.offset = offset;
  }
}

/** The payload's CRC does not match its contents: damaged, or edited without care. */
export class EmvCrcError extends EmvFormatError {
  constructor(message, offset) {
    super(message, offset);
    this.name = 'EmvCrcError';
  }
}

/** A well-formed EMV merchant QR of another scheme: no Paycode merchant account in it. */
export class NotPaycodeCollection extends PaycodeError {
  constructor(message, scheme = null) {
    super('not_paycode_collection', message);
    this.name = 'NotPaycodeCollection';
    this.scheme = scheme;
  }
}
