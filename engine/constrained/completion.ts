/**
 * Shortest completions of a partial JSON value. When a constrained request nears its token
 * limit, the engine closes the value with these bytes, so that the output still parses.
 *
 * A completion closes the top frame of a stack from its current position, then each parent in turn.
 * Values still to be written take their shortest form: the shortest literal, `0` or the bound
 * nearest to it, strings of `a` up to the minimum length, the minimum number of items and only
 * the required properties.
 */
import { StringMode, type ArrayFrame, type Frame, type LiteralFrame, type MatcherState, type NumberFrame, type ObjectFrame, type RecordFrame, type Stack, type StringFrame } from './frames.ts';
import type { GrammarNode, NumberNode, ObjectNode, PropertyRule } from './grammar.ts';
import { advanceBytes, afterChild, canEnd, keyCandidates, numberCanFinish } from './matcher.ts';
import type { VocabularyTrie } from './token-mask.ts';

const utf8 = new TextEncoder();
const byte = { quote: 0x22, comma: 0x2c, colon: 0x3a, zero: 0x30, a: 0x61, n: 0x6e, closeBracket: 0x5d, closeBrace: 0x7d, openBracket: 0x5b, openBrace: 0x7b } as const;

/**
 * Returns the shortest bytes found that turn `state` into a complete value, or undefined when
 * no stack yields bytes that the matcher accepts to the end. An empty array means the value is complete.
 */
export function shortestCompletion(state: MatcherState): Uint8Array | undefined {
  let best: Uint8Array | undefined;
  for (const stack of state) {
    const bytes = Uint8Array.from(completeStack(stack));
    if (best !== undefined && bytes.length >= best.length) continue;
    // The matcher checks the bytes, so a completion that this module gets wrong is never used.
    const end = advanceBytes([stack], bytes);
    if (end.length > 0 && canEnd(end)) best = bytes;
  }
  return best;
}

/**
 * Splits `bytes` into token ids, longest token first. Returns undefined when some byte starts no
 * token of the vocabulary.
 */
export function tokenizeBytes(trie: VocabularyTrie, bytes: Uint8Array): number[] | undefined {
  const tokens: number[] = [];
  let position = 0;
  while (position < bytes.length) {
    let node = 0;
    let token = -1;
    let length = 0;
    for (let offset = position; offset < bytes.length; offset++) {
      let child = trie.firstChild[node]!;
      while (child !== -1 && trie.edgeByte[child] !== bytes[offset]) child = trie.nextSibling[child]!;
      if (child === -1) break;
      node = child;
      if (trie.tokenAt[node]! >= 0) {
        token = trie.tokenAt[node]!;
        length = offset - position + 1;
      }
    }
    if (token < 0) return undefined;
    tokens.push(token);
    position += length;
  }
  return tokens;
}

/**
 * Returns the length in bytes of the shortest completion of `state`, as `shortestCompletion`
 * would build it but without checking it, or Infinity for an empty state. Each token has at
 * least one byte, so this bounds the tokens the completion needs. The closing bytes of a
 * stack's parents are cached on the parent, which stays the same object while the top value grows.
 */
export function completionLength(state: MatcherState): number {
  let best = Infinity;
  for (const stack of state) {
    const frame = stack.frame;
    if (frame.kind === 'root') {
      best = Math.min(best, frame.done ? 0 : shortestText(frame.node).length);
      continue;
    }
    best = Math.min(best, closeFrame(frame).length + parentsLength(stack.parent!));
  }
  return best;
}

/**
 * Returns an upper bound on `completionLength` over every state inside a `node` value: the
 * longest way to close its deepest open value plus its required properties and items.
 */
export function maxCompletionLength(node: GrammarNode): number {
  const known = maxLengths.get(node);
  if (known !== undefined) return known;
  const length = computeMaxCompletionLength(node);
  maxLengths.set(node, length);
  return length;
}

const maxLengths = new WeakMap<GrammarNode, number>();

function computeMaxCompletionLength(node: GrammarNode): number {
  switch (node.kind) {
    case 'literal':
      return Math.max(...node.alternatives.map((alternative) => alternative.length));
    case 'string':
      // Four bytes cover an escape's hex digits or a character's continuation bytes.
      return node.minLength + 5;
    case 'number':
      return 20;
    case 'array':
      return maxCompletionLength(node.items) + 2 + node.minItems * (shortestText(node.items).length + 1);
    case 'object': {
      const required = requiredProperties(node).reduce((sum, property) => sum + property.keyBytes.length + shortestText(property.value).length + 1, 0);
      const deepest = Math.max(0, ...node.properties.map((property) => property.keyBytes.length + maxCompletionLength(property.value)));
      return 2 + required + deepest;
    }
    case 'record':
      return 3 + maxCompletionLength(node.key) + maxCompletionLength(node.value) + shortestText(node.value).length;
    case 'union':
      return Math.max(...node.options.map(maxCompletionLength));
  }
}

const parentLengths = new WeakMap<Stack, number>();

/** Returns the length of the bytes that close `parent` and its ancestors once the value on top of them ends. */
export function parentsLength(parent: Stack): number {
  const known = parentLengths.get(parent);
  if (known !== undefined) return known;
  const length = completeStack({ frame: afterChild(parent.frame), parent: parent.parent }).length;
  parentLengths.set(parent, length);
  return length;
}

function completeStack(stack: Stack): number[] {
  const out: number[] = [];
  let current: Stack | undefined = stack;
  let frame: Frame = stack.frame;
  while (current !== undefined) {
    if (frame.kind === 'root') {
      if (!frame.done) out.push(...shortestText(frame.node));
      break;
    }
    out.push(...closeFrame(frame));
    current = current.parent;
    if (current !== undefined) frame = afterChild(current.frame);
  }
  return out;
}

/** Returns the bytes that end `frame`, which is the top of its stack. */
function closeFrame(frame: Exclude<Frame, { kind: 'root' }>): number[] {
  switch (frame.kind) {
    case 'literal':
      return closeLiteral(frame);
    case 'string':
      return closeString(frame);
    case 'number':
      return closeNumber(frame);
    case 'array':
      return closeArray(frame);
    case 'object':
      return closeObject(frame);
    case 'record':
      return closeRecord(frame);
  }
}

function closeLiteral(frame: LiteralFrame): number[] {
  if (frame.complete) return [];
  return shortest(frame.candidates.map((index) => Array.from(frame.node.alternatives[index]!.subarray(frame.offset))));
}

function closeString(frame: StringFrame): number[] {
  const out: number[] = [];
  // An escape was counted at its backslash: `\n` ends it, and `\u` takes four hex digits in all.
  if (frame.mode === StringMode.Escape) out.push(byte.n);
  const hexLeft: Partial<Record<StringMode, number>> = { [StringMode.Hex0]: 4, [StringMode.Hex1]: 3, [StringMode.Hex1AfterD]: 3, [StringMode.Hex2]: 2, [StringMode.Hex3]: 1 };
  for (let i = 0; i < (hexLeft[frame.mode] ?? 0); i++) out.push(byte.zero);
  // A character whose lead byte was read ends with its smallest valid continuation bytes.
  if (frame.pending > 0) {
    out.push(frame.low);
    for (let i = 1; i < frame.pending; i++) out.push(0x80);
  }
  for (let length = frame.length; length < frame.node.minLength; length++) out.push(byte.a);
  out.push(byte.quote);
  return out;
}

function closeNumber(frame: NumberFrame): number[] {
  if (numberCanFinish(frame)) return [];
  if (!frame.node.integer || frame.fraction === 0) return [byte.zero];
  const { minimum, maximum } = frame.node;
  if (frame.digits === '') return Array.from(utf8.encode(String(-Math.min(-1, maximum))));

  // Appending k digits to D spans D·10^k to D·10^k + 10^k − 1. The first k with a value in
  // bounds gives the shortest completion, and its value nearest to zero fills the digits.
  const base = Number(frame.digits);
  for (let scale = 10; scale <= 1e16; scale *= 10) {
    const low = base * scale;
    const high = low + scale - 1;
    const magnitude = frame.negative ? Math.max(low, -maximum) : Math.max(low, minimum);
    const limit = frame.negative ? Math.min(high, -minimum) : Math.min(high, maximum);
    if (magnitude <= limit) return Array.from(utf8.encode(String(magnitude).slice(frame.digits.length)));
  }
  return [];
}

function closeArray(frame: ArrayFrame): number[] {
  const node = frame.node;
  const out: number[] = [];
  let count = frame.count;
  // After a comma an item must follow, and after `[` one follows when items are required.
  if (frame.phase === 'next' || (frame.phase === 'open' && node.minItems > 0)) {
    out.push(...shortestText(node.items));
    count++;
  }
  for (; count < node.minItems; count++) out.push(byte.comma, ...shortestText(node.items));
  out.push(byte.closeBracket);
  return out;
}

function closeObject(frame: ObjectFrame): number[] {
  const properties = frame.node.properties;
  switch (frame.phase) {
    case 'open':
      return [...joinProperties(requiredAfter(frame, -1)), byte.closeBrace];
    case 'afterValue':
      return closeAfter(requiredAfter(frame, -1));
    case 'next': {
      // A comma was written, so at least one more property must follow.
      const required = requiredAfter(frame, -1);
      const written = required.length > 0 ? required : [properties[keyCandidates(frame)[0]!]!];
      return [...joinProperties(written), byte.closeBrace];
    }
    case 'value':
      return [...shortestText(properties[frame.current]!.value), ...closeAfter(requiredAfter(frame, frame.current))];
    case 'key': {
      let best: number[] | undefined;
      for (const index of frame.candidates) {
        const property = properties[index]!;
        const bytes = [...property.keyBytes.subarray(frame.offset), ...shortestText(property.value), ...closeAfter(requiredAfter(frame, index))];
        if (best === undefined || bytes.length < best.length) best = bytes;
      }
      return best ?? [byte.closeBrace];
    }
    case 'inValue':
      throw new Error('an object waiting for a value is never the top frame');
  }
}

/** Returns the bytes that end an object after a written value: the `rest` properties, then `}`. */
function closeAfter(rest: readonly PropertyRule[]): number[] {
  return rest.length === 0 ? [byte.closeBrace] : [byte.comma, ...joinProperties(rest), byte.closeBrace];
}

/** Required properties still to write once property `chosen` (or none, for -1) is written, in key order. */
function requiredAfter(frame: ObjectFrame, chosen: number): PropertyRule[] {
  const properties = frame.node.properties;
  return properties.filter((property, index) => {
    if (!property.required || index === chosen) return false;
    if (frame.node.anyOrder) return (frame.used & (1 << index)) === 0;
    return index >= frame.next && index > chosen;
  });
}

function joinProperties(properties: readonly PropertyRule[]): number[] {
  const out: number[] = [];
  properties.forEach((property, index) => {
    if (index > 0) out.push(byte.comma);
    out.push(...property.keyBytes, ...shortestText(property.value));
  });
  return out;
}

function closeRecord(frame: RecordFrame): number[] {
  const node = frame.node;
  switch (frame.phase) {
    case 'open':
    case 'afterValue':
      return [byte.closeBrace];
    case 'next':
      return [...shortestText(node.key), byte.colon, ...shortestText(node.value), byte.closeBrace];
    case 'colon':
      return [byte.colon, ...shortestText(node.value), byte.closeBrace];
    case 'value':
      return [...shortestText(node.value), byte.closeBrace];
    case 'inKey':
    case 'inValue':
      throw new Error('a record waiting for a key or value is never the top frame');
  }
}

const shortestTexts = new WeakMap<GrammarNode, number[]>();

/** Returns the shortest JSON text of a node, cached. Grammars have no cycles, because zod's lazy schemas are rejected. */
function shortestText(node: GrammarNode): number[] {
  const known = shortestTexts.get(node);
  if (known !== undefined) return known;
  const text = computeShortestText(node);
  shortestTexts.set(node, text);
  return text;
}

function computeShortestText(node: GrammarNode): number[] {
  switch (node.kind) {
    case 'literal':
      return Array.from(shortest(node.alternatives));
    case 'string':
      return [byte.quote, ...new Array<number>(node.minLength).fill(byte.a), byte.quote];
    case 'number':
      return Array.from(utf8.encode(String(nearestToZero(node))));
    case 'array': {
      const out: number[] = [byte.openBracket];
      for (let i = 0; i < node.minItems; i++) out.push(...(i > 0 ? [byte.comma] : []), ...shortestText(node.items));
      out.push(byte.closeBracket);
      return out;
    }
    case 'object':
      return [byte.openBrace, ...joinProperties(requiredProperties(node)), byte.closeBrace];
    case 'record':
      return [byte.openBrace, byte.closeBrace];
    case 'union':
      return shortest(node.options.map(shortestText));
  }
}

/** Returns the first of the shortest items; `items` is never empty here. */
function shortest<T extends { readonly length: number }>(items: readonly T[]): T {
  return items.reduce((best, item) => (item.length < best.length ? item : best));
}

function requiredProperties(node: ObjectNode): PropertyRule[] {
  return node.properties.filter((property) => property.required);
}

function nearestToZero(node: NumberNode): number {
  if (!node.integer) return 0;
  if (node.minimum > 0) return node.minimum;
  if (node.maximum < 0) return node.maximum;
  return 0;
}
