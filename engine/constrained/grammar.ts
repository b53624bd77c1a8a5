/**
 * The grammar of one JSON value as the matcher walks it. It is built from a zod schema by
 * `grammarFromZod` and describes a subset of the values the schema accepts: compact JSON as
 * `JSON.stringify` writes it (no whitespace), object keys in the schema's order, numbers
 * without exponents. Every value the grammar admits parses with JSON.parse and passes the schema.
 */
export type GrammarNode = LiteralNode | StringNode | NumberNode | ArrayNode | ObjectNode | RecordNode | UnionNode;

/** Exact JSON texts, for enums, literals, booleans and null. */
export interface LiteralNode {
  readonly kind: 'literal';
  /** Node number, unique within one grammar, that matcher state keys use. */
  readonly id: number;
  /** UTF-8 bytes of each alternative's JSON text, for example `"calm"` with its quotes. */
  readonly alternatives: readonly Uint8Array[];
}

/** Any JSON string whose decoded length in code points (zod 4.6 counts code points) is within the bounds. */
export interface StringNode {
  readonly kind: 'string';
  readonly id: number;
  readonly minLength: number;
  /** Infinity when the schema sets no maximum. */
  readonly maxLength: number;
}

/**
 * A JSON number without exponent. Integer nodes carry inclusive bounds within the safe integer
 * range. Other numbers are unbounded but limited to `maxNumberDigits` digits before and after the
 * point, so every value is finite.
 */
export interface NumberNode {
  readonly kind: 'number';
  readonly id: number;
  readonly integer: boolean;
  readonly minimum: number;
  readonly maximum: number;
}

export interface ArrayNode {
  readonly kind: 'array';
  readonly id: number;
  readonly items: GrammarNode;
  readonly minItems: number;
  /** Infinity when the schema sets no maximum. */
  readonly maxItems: number;
}

export interface PropertyRule {
  readonly name: string;
  /** The key as it appears before the value: the JSON string of the name followed by a colon. */
  readonly keyBytes: Uint8Array;
  readonly value: GrammarNode;
  readonly required: boolean;
}

/**
 * An object with known keys, each at most once. For a zod object the keys must come in
 * declaration order, which is the order `JSON.stringify` writes. A record with enum keys accepts
 * them in any order, because code that fills such a record may set its keys in any order (the
 * training corpus generator sets `dish` before `waited`).
 */
export interface ObjectNode {
  readonly kind: 'object';
  readonly id: number;
  readonly properties: readonly PropertyRule[];
  readonly anyOrder: boolean;
}

/** An object with arbitrary string keys, each followed by a value of one schema. */
export interface RecordNode {
  readonly kind: 'record';
  readonly id: number;
  readonly key: StringNode;
  readonly value: GrammarNode;
}

/** A value that matches any of the options; the matcher follows all of them in parallel. */
export interface UnionNode {
  readonly kind: 'union';
  readonly id: number;
  readonly options: readonly GrammarNode[];
}

/** Digits allowed before and after the point of a non-integer number, so its value stays finite. */
export const maxNumberDigits = 15;

/** Properties of an any-order object are tracked in a 32-bit mask. */
export const maxAnyOrderProperties = 31;
