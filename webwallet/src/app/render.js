// Drawing a code for a cashier's scanner: black modules on white, integer scaling (no blur),
// the quiet zones the symbologies require. QR for v2/v3 (@paulmillr/qr), Code 128 set C for
// v1 (jsbarcode's encoder) with the digits in groups of four for typing at the till.
import encodeQR from '@paulmillr/qr';
import { CODE128C } from 'jsbarcode/bin/barcodes/CODE128/index.js';

const QR_BORDER_MODULES = 4;
const CODE128_QUIET_MODULES = 12;
const INK = '#000';
const PAPER = '#fff';

export function qrMatrix(text) {
  return encodeQR(text, 'raw', { ecc: 'medium', border: QR_BORDER_MODULES });
}

export function drawQr(canvas, text, sizePxMax = 600) {
  const matrix = qrMatrix(text);
  const modulePx = Math.max(2, Math.floor(sizePxMax / matrix.length));
  const size = matrix.length * modulePx;
  canvas.width = size;
  canvas.height = size;
  const context = canvas.getContext('2d');
  context.fillStyle = PAPER;
  context.fillRect(0, 0, size, size);
  context.fillStyle = INK;
  matrix.forEach((row, y) => row.forEach((dark, x) => {
    if (dark) context.fillRect(x * modulePx, y * modulePx, modulePx, modulePx);
  }));
}

export function code128Modules(digits) {
  if (!/^(\d\d)+$/.test(digits)) throw new RangeError('a Code 128 set C payment code is an even number of digits');
  return new CODE128C(digits, {}).encode().data;
}

export function drawCode128(canvas, digits, { modulePx = 3, heightPx = 160 } = {}) {
  const pattern = '0'.repeat(CODE128_QUIET_MODULES) + code128Modules(digits) + '0'.repeat(CODE128_QUIET_MODULES);
  canvas.width = pattern.length * modulePx;
  canvas.height = heightPx;
  const context = canvas.getContext('2d');
  context.fillStyle = PAPER;
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = INK;
  [...pattern].forEach((bit, i) => {
    if (bit === '1') context.fillRect(i * modulePx, 0, modulePx, heightPx);
  });
}

export function groupDigits(digits, group = 4) {
  const parts = [];
  for (let i = 0; i < digits.length; i += group) parts.push(digits.slice(i, i + group));
  return parts.join(' ');
}

export function clearCanvas(canvas) {
  const context = canvas.getContext('2d');
  context.fillStyle = PAPER;
  context.fillRect(0, 0, canvas.width, canvas.height);
}
