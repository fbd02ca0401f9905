// Byte helpers for the protocol (docs/spec.md, "Notation"): hex, base64 (standard, padded) and
// base64url (unpadded), concatenation, big-endian u16/u32/u64, UTF-8. Decoders are strict: one
// spelling per byte string (canonical padding bits included), anything else throws
// PaycodeError('invalid_argument'). No secrets pass through here in the app (keys are
// CryptoKeys), except in the explicit import helpers' arguments.
import { invalidArgument } from './errors.js';

const HEX = '0123456789abcdef';
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const encoder = new TextEncoder();

function table(alphabet) {
  const map = new Int16Array(128).fill(-1);
  for (let i = 0; i < alphabet.length; i++) map[alphabet.charCodeAt(i)] = i;
  return map;
}
const B64_VALUES = table(B64);
const B64URL_VALUES = table(B64URL);

function requireBytes(data, what = 'data') {
  if (!(data instanceof Uint8Array)) throw invalidArgument(`${what} must be a Uint8Array`);
  return data;
}

export function bytesToHex(data) {
  requireBytes(data);
  let out = '';
  for (const byte of data) out += HEX[byte >> 4] + HEX[byte & 15];
  return out;
}

export function hexToBytes(text) {
  if (typeof text !== 'string' || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw invalidArgument('not an even-length hex string');
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function encode64(data, alphabet, pad) {
  requireBytes(data);
  let out = '';
  for (let i = 0; i < data.length; i += 3) {
    const n = (data[i] << 16) | ((data[i + 1] ?? 0) << 8) | (data[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((data.length - i) * 8) / 6));
    for (let c = 0; c < chars; c++) out += alphabet[(n >> (18 - 6 * c)) & 63];
    if (pad) out += '='.repeat(4 - chars);
  }
  return out;
}

function decode64(text, values, what) {
  if (typeof text !== 'string') throw invalidArgument(`${what} must be a string`);
  const rest = text.length % 4;
  if (rest === 1) throw invalidArgument(`${what} has an impossible length`);
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let buffer = 0;
  let at = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const value = code < 128 ? values[code] : -1;
    if (value < 0) throw invalidArgument(`${what} has a character outside its alphabet at ${i}`);
    buffer = ((buffer << 6) | value) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[at++] = (buffer >> bits) & 0xff;
    }
  }
  if (bits > 0 && (buffer & ((1 << bits) - 1)) !== 0) {
    throw invalidArgument(`${what} is not canonical (unused bits set)`);
  }
  return out;
}

export function b64encode(data) {
  return encode64(data, B64, true);
}

/** Standard base64 with padding; refuses missing or extra padding and non-canonical text. */
export function b64decode(text) {
  if (typeof text !== 'string' || text.length % 4 !== 0) {
    throw invalidArgument('base64 must be padded to a multiple of 4 characters');
  }
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  return decode64(text.slice(0, text.length - padding), B64_VALUES, 'base64');
}

export function b64urlEncode(data) {
  return encode64(data, B64URL, false);
}

/** Unpadded base64url (RFC 4648 §5); refuses '=', foreign characters, non-canonical text. */
export function b64urlDecode(text) {
  return decode64(text, B64URL_VALUES, 'base64url');
}

export function concatBytes(...parts) {
  let size = 0;
  for (const part of parts) size += requireBytes(part, 'every part').length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function fixed(value, size) {
  let n;
  try {
    n = BigInt(value);
  } catch {
    throw invalidArgument(`not an integer: ${String(value).slice(0, 20)}`);
  }
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw invalidArgument('not a safe integer');
  }
  if (n < 0n || n >= 1n << BigInt(8 * size)) {
    throw invalidArgument(`${value} does not fit ${8 * size} bits`);
  }
  const out = new Uint8Array(size);
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

/** Big-endian unsigned encodings (a number or a bigint; out of range throws). */
export const u8 = (value) => fixed(value, 1);
export const u16 = (value) => fixed(value, 2);
export const u32 = (value) => fixed(value, 4);
export const u64 = (value) => fixed(value, 8);

/** The big-endian unsigned integer of `data` (int(b) in the spec) as a bigint. */
export function bytesToBigInt(data) {
  let n = 0n;
  for (const byte of requireBytes(data)) n = (n << 8n) | BigInt(byte);
  return n;
}

/** UTF-8 bytes of `text`. */
export function utf8(text) {
  if (typeof text !== 'string') throw invalidArgument('utf8 takes a string');
  return encoder.encode(text);
}

/** Best-effort wipe of a buffer that held key bytes. */
export function wipe(data) {
  if (data instanceof Uint8Array) data.fill(0);
}
