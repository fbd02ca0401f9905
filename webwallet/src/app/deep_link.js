// The page a shop sends its customer to (/pay/<token>, docs/api.md "Hosted checkout") links
// here as /wallet/#pay=<the signed QR payload, URL-encoded>: on a phone, the wallet opens that
// payload as if its camera had read it. A fragment, not a query: it never reaches a server or
// a log. Only what a scan could give is taken, and the payload is then checked exactly as a
// scanned one (parse, then the server's signature) before anything can be paid.
import { PAYLOAD_CHARS_MAX } from '../core/mpm.js';

const PREFIX = '#pay=';

/** The merchant QR payload in a location hash `#pay=...`, or null when there is none or it
 * cannot be one (badly encoded, empty, longer than a payload can be). */
export function payloadFromHash(hash) {
  if (typeof hash !== 'string' || !hash.startsWith(PREFIX)) return null;
  const encoded = hash.slice(PREFIX.length);
  // A character of the payload is at most 12 encoded ones (4 UTF-8 bytes as %XX).
  if (encoded.length === 0 || encoded.length > PAYLOAD_CHARS_MAX * 12) return null;
  let payload;
  try {
    payload = decodeURIComponent(encoded);
  } catch {
    return null;
  }
  if (payload.length === 0 || payload.length > PAYLOAD_CHARS_MAX) return null;
  return payload;
}
