// Which national scheme issued a Merchant-Presented QR, told by the globally unique
// identifiers (sub-tag 00) of its merchant account templates 26-51 (docs/spec.md §12 names
// the EMV MPM payload; the table mirrors the Python reference). Earlier entries win.

const SCHEME_GUIDS = [
  ['paycode', 'dev.paycode', false],
  ['pix', 'br.gov.bcb.pix', false],
  ['promptpay', 'A000000677', true],
  ['paynow', 'SG.PAYNOW', false],
  ['sgqr', 'SG.SGQR', false],
  ['qris', 'ID.CO.QRIS.WWW', false],
  ['vietqr', 'A000000727', true],
  ['hk_fps', 'hk.com.hkicl', false],
  ['duitnow', 'A0000006150001', true],
  ['bharat_qr', 'A000000524', true],
];

/** Unicode case folding as Python's str.casefold for the identifiers at hand. */
export function casefold(text) {
  return text.toUpperCase().toLowerCase();
}

/** The scheme named by the first matching identifier, else null. */
export function recognize(guids) {
  const found = guids.map(casefold);
  for (const [scheme, guid, prefix] of SCHEME_GUIDS) {
    const wanted = casefold(guid);
    if (found.some((seen) => (prefix ? seen.startsWith(wanted) : seen === wanted))) return scheme;
  }
  // QRIS issuers name themselves like "ID.CO.SHOPEE.WWW" without the QRIS registry template.
  if (found.some((seen) => seen.startsWith('id.') && seen.endsWith('.www'))) return 'qris';
  return null;
}
