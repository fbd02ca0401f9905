// Damm check digit of the numeric v1 code (docs/spec.md §4): it detects every single-digit
// error and every adjacent transposition. The order-10 totally anti-symmetric quasigroup is
// the Python reference's table.
import { invalidArgument } from './errors.js';

const TABLE = [
  [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
  [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
  [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
  [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
  [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
  [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
  [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
  [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
  [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
  [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

function interim(digits) {
  if (typeof digits !== 'string' || !/^[0-9]*$/.test(digits)) {
    throw invalidArgument('Damm takes ASCII digits only');
  }
  let state = 0;
  for (let i = 0; i < digits.length; i++) state = TABLE[state][digits.charCodeAt(i) - 48];
  return state;
}

/** The check digit to append to `digits`. */
export function dammDigit(digits) {
  return String(interim(digits));
}

/** True when `digits` ends in its correct check digit. */
export function dammValid(digits) {
  return digits.length > 0 && interim(digits) === 0;
}
