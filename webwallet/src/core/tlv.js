// EMV Merchant-Presented Mode data objects (docs/spec.md §12): text of a two-digit ID, a
// two-digit length and that many characters of value. Lengths and offsets count characters
// (Unicode code points, as the Python reference does: template 64 holds UTF-8 names such as
// 北京), never UTF-16 units or bytes. Strict: every defect is an EmvFormatError at its offset.
import { EmvFormatError } from './errors.js';

export const HEADER_CHARS = 4;

/** One ID-length-value object; `offset` is where its ID starts in the whole payload. */
export class DataObject {
  constructor(tag, value, offset, size, children = null) {
    this.tag = tag;
    this.value = value;
    this.offset = offset;
    /** The value's length in characters (code points). */
    this.size = size;
    /** Objects nested in a template; null for primitives and unreadable 80-99 values. */
    this.children = children;
  }

  /** The nested object with ID `tag`, if this is a template that has one. */
  child(tag) {
    return this.children?.find((item) => item.tag === tag) ?? null;
  }

  /** Where the object after this one starts. */
  get end() {
    return this.offset + HEADER_CHARS + this.size;
  }
}

const isDigits = (text) => /^[0-9]*$/.test(text);

/** The object whose ID starts at `position` of `chars` (an array of code points). */
export function readItem(chars, position, end) {
  if (end - position < HEADER_CHARS) {
    throw new EmvFormatError(
      `truncated data object: ${end - position} characters where an ID and a length need ` +
        `${HEADER_CHARS}`,
      position,
    );
  }
  const tag = chars.slice(position, position + 2).join('');
  const lengthText = chars.slice(position + 2, position + 4).join('');
  if (!isDigits(tag)) {
    throw new EmvFormatError(`data object ID ${JSON.stringify(tag)} is not two digits`, position);
  }
  if (!isDigits(lengthText)) {
    throw new EmvFormatError(
      `length ${JSON.stringify(lengthText)} of data object ${tag} is not two digits`,
      position + 2,
    );
  }
  const valueStart = position + HEADER_CHARS;
  const length = Number(lengthText);
  if (valueStart + length > end) {
    throw new EmvFormatError(
      `data object ${tag} declares ${length} characters but ${end - valueStart} remain`,
      position + 2,
    );
  }
  const value = chars.slice(valueStart, valueStart + length).join('');
  return new DataObject(tag, value, position, length);
}

/** The objects filling chars[start:end] exactly, IDs unique at this level. */
export function readLevel(chars, start, end) {
  const items = [];
  const seen = new Set();
  let position = start;
  while (position < end) {
    const item = readItem(chars, position, end);
    if (seen.has(item.tag)) {
      throw new EmvFormatError(`data object ID ${item.tag} appears twice`, position);
    }
    seen.add(item.tag);
    items.push(item);
    position = item.end;
  }
  return items;
}
