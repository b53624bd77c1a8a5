/**
 * The frames of the byte matcher's stacks. Each JSON value being read has one frame, which
 * records where in the value the matcher is. Frames are immutable, so matcher states can share them.
 */
import type { ArrayNode, GrammarNode, LiteralNode, NumberNode, ObjectNode, RecordNode, StringNode } from './grammar.ts';

export interface RootFrame {
  readonly kind: 'root';
  readonly node: GrammarNode;
  readonly done: boolean;
}

export interface LiteralFrame {
  readonly kind: 'literal';
  readonly node: LiteralNode;
  /** Indexes of the alternatives whose first `offset` bytes were read. */
  readonly candidates: readonly number[];
  readonly offset: number;
  /** True when one candidate ends at `offset` while longer ones continue. */
  readonly complete: boolean;
}

/** String modes: inside the text, after a backslash, or at one of the four hex digits of `\uXXXX`. */
export const StringMode = {
  Body: 0,
  Escape: 1,
  Hex0: 2,
  Hex1: 3,
  Hex2: 4,
  Hex3: 5,
  /** The second hex digit after a first digit of D, which must stay below 8 to avoid a surrogate. */
  Hex1AfterD: 6,
} as const;
export type StringMode = (typeof StringMode)[keyof typeof StringMode];

export interface StringFrame {
  readonly kind: 'string';
  readonly node: StringNode;
  /** Decoded length so far in code points, as zod 4 counts it, counting a character at its first byte. */
  readonly length: number;
  readonly mode: StringMode;
  /** UTF-8 continuation bytes still expected for the current character, and the range of the next one. */
  readonly pending: number;
  readonly low: number;
  readonly high: number;
}

export interface NumberFrame {
  readonly kind: 'number';
  readonly node: NumberNode;
  readonly negative: boolean;
  /** Digits before the point. */
  readonly digits: string;
  /** Digits after the point, or -1 before any point. */
  readonly fraction: number;
}

export interface ArrayFrame {
  readonly kind: 'array';
  readonly node: ArrayNode;
  /** `open` follows `[`, `item` waits for an item to end, `afterItem` expects `,` or `]`, `next` follows `,`. */
  readonly phase: 'open' | 'item' | 'afterItem' | 'next';
  readonly count: number;
}

export interface ObjectFrame {
  readonly kind: 'object';
  readonly node: ObjectNode;
  /** `key` reads a key, `value` expects the value's first byte, `inValue` waits for the value to end. */
  readonly phase: 'open' | 'key' | 'value' | 'inValue' | 'afterValue' | 'next';
  /** Ordered objects: the index of the first property not yet written or skipped. */
  readonly next: number;
  /** Any-order objects: a bit per property already written. */
  readonly used: number;
  /** While reading a key: the properties whose key bytes still match. */
  readonly candidates: readonly number[];
  readonly offset: number;
  /** The property whose value is being read. */
  readonly current: number;
}

export interface RecordFrame {
  readonly kind: 'record';
  readonly node: RecordNode;
  readonly phase: 'open' | 'inKey' | 'colon' | 'value' | 'inValue' | 'afterValue' | 'next';
}

export type Frame = RootFrame | LiteralFrame | StringFrame | NumberFrame | ArrayFrame | ObjectFrame | RecordFrame;

export interface Stack {
  readonly frame: Frame;
  readonly parent: Stack | undefined;
}

/** Stacks that are still alive. An empty state means that the bytes read so far fit no value. */
export type MatcherState = readonly Stack[];
