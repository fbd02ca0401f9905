// The 15-byte plaintext the QR versions hide (docs/spec.md §5, §6):
//   plain = handle[8] | u32(step) | u16(counter) | u8(flags)
import { concatBytes, u16, u32, u8 } from './bytes.js';

export const HANDLE_BYTES = 8;
export const SIZE = 15;
export const COUNTER_MAX = 0xffff;

/** The packed plaintext; arguments were checked by codes.js. */
export function pack(handle, step, counter, flags) {
  return concatBytes(handle, u32(step), u16(counter), u8(flags));
}
