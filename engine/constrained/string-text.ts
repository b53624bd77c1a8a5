/** Scanning of unescaped JSON string text: well-formed UTF-8 and its length in code points, as zod 4 counts string length. */
export const quoteByte = 0x22;
export const backslashByte = 0x5c;

/** Position in a string's text: its decoded length and the UTF-8 bytes its last character still needs. */
export interface StringCursor {
  length: number;
  pending: number;
  low: number;
  high: number;
}

/**
 * Advances `from` over one byte of unescaped string text into `to`. Returns false when the byte
 * cannot come next: a control character, ill-formed UTF-8, a character beyond `maxLength`, or a
 * quote or backslash, which the caller handles when no continuation byte is pending.
 */
export function advanceStringText(from: Readonly<StringCursor>, maxLength: number, value: number, to: StringCursor): boolean {
  if (from.pending > 0) {
    if (value < from.low || value > from.high) return false;
    to.length = from.length;
    to.pending = from.pending - 1;
    to.low = 0x80;
    to.high = 0xbf;
    return true;
  }
  if (value < 0x20 || value === quoteByte || value === backslashByte) return false;
  if (value < 0x80) {
    if (from.length + 1 > maxLength) return false;
    to.length = from.length + 1;
    to.pending = 0;
    to.low = 0;
    to.high = 0;
    return true;
  }

  const lead = utf8Leads[value];
  if (lead === undefined || from.length + 1 > maxLength) return false;
  to.length = from.length + 1;
  to.pending = lead.pending;
  to.low = lead.low;
  to.high = lead.high;
  return true;
}


interface Utf8Lead {
  /** Continuation bytes that follow the lead byte. */
  readonly pending: number;
  /** Range of the first continuation byte, which rules out overlong forms and surrogates. */
  readonly low: number;
  readonly high: number;
}

/**
 * Well-formed UTF-8 lead bytes by byte value. The ranges of the first continuation byte rule out
 * overlong forms, surrogates and code points above U+10FFFF.
 */
const utf8Leads: readonly (Utf8Lead | undefined)[] = Array.from({ length: 256 }, (_, value) => {
  if (value >= 0xc2 && value <= 0xdf) return { pending: 1, low: 0x80, high: 0xbf };
  if (value === 0xe0) return { pending: 2, low: 0xa0, high: 0xbf };
  if (value === 0xed) return { pending: 2, low: 0x80, high: 0x9f };
  if (value >= 0xe1 && value <= 0xef) return { pending: 2, low: 0x80, high: 0xbf };
  if (value === 0xf0) return { pending: 3, low: 0x90, high: 0xbf };
  if (value === 0xf4) return { pending: 3, low: 0x80, high: 0x8f };
  if (value >= 0xf1 && value <= 0xf3) return { pending: 3, low: 0x80, high: 0xbf };
  return undefined;
});

export function hexValue(value: number): number {
  if (value >= 0x30 && value <= 0x39) return value - 0x30;
  if (value >= 0x41 && value <= 0x46) return value - 0x41 + 10;
  if (value >= 0x61 && value <= 0x66) return value - 0x61 + 10;
  return -1;
}

