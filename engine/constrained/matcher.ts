/**
 * A pushdown automaton over UTF-8 bytes that accepts exactly the JSON texts of a grammar.
 *
 * A matcher state is a set of stacks, because a union follows every option that still fits.
 * Stacks and frames are immutable, so one state can be advanced along many byte paths, which is
 * how the token mask walks the vocabulary trie. Each value's frame is pushed when its first byte
 * arrives and popped right after its last byte. Numbers and literals that are a prefix of a
 * longer alternative cannot tell that they are over, so they stay on the stack and end when the
 * next byte fits their parent instead.
 */
import { StringMode, type ArrayFrame, type Frame, type LiteralFrame, type MatcherState, type NumberFrame, type ObjectFrame, type RecordFrame, type Stack, type StringFrame } from './frames.ts';
import { maxNumberDigits, type GrammarNode, type LiteralNode, type StringNode } from './grammar.ts';
import { stateKey } from './state-key.ts';
import { advanceStringText, hexValue, type StringCursor } from './string-text.ts';

export type { MatcherState, Stack } from './frames.ts';
export { stateKey } from './state-key.ts';

const byte = {
  quote: 0x22,
  backslash: 0x5c,
  comma: 0x2c,
  colon: 0x3a,
  minus: 0x2d,
  point: 0x2e,
  zero: 0x30,
  nine: 0x39,
  openBracket: 0x5b,
  closeBracket: 0x5d,
  openBrace: 0x7b,
  closeBrace: 0x7d,
  u: 0x75,
} as const;

/** Bytes that may follow a backslash in a JSON string, apart from `u`. */
const simpleEscapes = new Set([...'"\\/bfnrt'].map((char) => char.charCodeAt(0)));

export function initialState(grammar: GrammarNode): MatcherState {
  return [{ frame: { kind: 'root', node: grammar, done: false }, parent: undefined }];
}

/** Returns the state after the byte `value`, which is empty when the byte does not fit. */
export function advanceByte(state: MatcherState, value: number): MatcherState {
  const out: Stack[] = [];
  for (const stack of state) feed(stack, value, out);
  return out;
}

export function advanceBytes(state: MatcherState, bytes: Uint8Array): MatcherState {
  let current = state;
  for (let i = 0; i < bytes.length && current.length > 0; i++) current = advanceByte(current, bytes[i]!);
  return current;
}

/** True when the bytes read so far form a complete value, so the end token may follow. */
export function canEnd(state: MatcherState): boolean {
  return state.some(stackCanEnd);
}

/** True when some byte may follow the current state. */
export function acceptsAnyByte(state: MatcherState): boolean {
  for (let value = 0; value < 256; value++) {
    if (advanceByte(state, value).length > 0) return true;
  }
  return false;
}

/** Removes stacks with equal keys, which unions with overlapping options produce. */
export function dedupeState(state: MatcherState): MatcherState {
  if (state.length < 2) return state;
  const byKey = new Map<string, Stack>();
  for (const stack of state) byKey.set(stateKey([stack], Infinity), stack);
  return [...byKey.values()];
}


/** Returns the top string frame of a one-stack state that reads unescaped text, for the mask walk's fast path. */
export function stringTextTop(state: MatcherState): { stack: Stack; node: StringNode; cursor: StringCursor } | undefined {
  if (state.length !== 1) return undefined;
  const stack = state[0]!;
  const frame = stack.frame;
  if (frame.kind !== 'string' || frame.mode !== StringMode.Body) return undefined;
  return { stack, node: frame.node, cursor: { length: frame.length, pending: frame.pending, low: frame.low, high: frame.high } };
}

/** Rebuilds the state of `stringTextTop` with its string text advanced to `cursor`. */
export function withStringCursor(stack: Stack, cursor: Readonly<StringCursor>): MatcherState {
  const frame = stack.frame as StringFrame;
  return [replaceTop(stack, { ...frame, length: cursor.length, pending: cursor.pending, low: cursor.low, high: cursor.high })];
}

function stackCanEnd(stack: Stack): boolean {
  let current = stack;
  for (;;) {
    const frame = current.frame;
    if (frame.kind === 'root') return frame.done;
    if (!frameCanFinish(frame)) return false;
    current = finish(current);
  }
}

/** True for frames that may end here although they could also read more bytes. */
function frameCanFinish(frame: Frame): boolean {
  if (frame.kind === 'literal') return frame.complete;
  if (frame.kind === 'number') return numberCanFinish(frame);
  return false;
}

function replaceTop(stack: Stack, frame: Frame): Stack {
  return { frame, parent: stack.parent };
}

/** Pops the finished top frame and marks its value complete in the parent frame. */
function finish(stack: Stack): Stack {
  const parent = stack.parent;
  if (parent === undefined) throw new Error('matcher popped its root frame');
  return replaceTop(parent, afterChild(parent.frame));
}

/** Returns a parent frame once its child value has ended. */
export function afterChild(frame: Frame): Frame {
  switch (frame.kind) {
    case 'root':
      return { ...frame, done: true };
    case 'array':
      return { ...frame, phase: 'afterItem', count: frame.count + 1 };
    case 'object':
      if (frame.node.anyOrder) return { ...frame, phase: 'afterValue', used: frame.used | (1 << frame.current) };
      return { ...frame, phase: 'afterValue', next: frame.current + 1 };
    case 'record':
      return { ...frame, phase: frame.phase === 'inKey' ? 'colon' : 'afterValue' };
    default:
      throw new Error(`matcher frame ${frame.kind} cannot hold a child value`);
  }
}

function feed(stack: Stack, value: number, out: Stack[]): void {
  const frame = stack.frame;
  switch (frame.kind) {
    case 'root':
      if (!frame.done) startValue(frame.node, value, stack, out);
      return;
    case 'literal':
      feedLiteral(stack, frame, value, out);
      return;
    case 'string':
      feedString(stack, frame, value, out);
      return;
    case 'number':
      feedNumber(stack, frame, value, out);
      return;
    case 'array':
      feedArray(stack, frame, value, out);
      return;
    case 'object':
      feedObject(stack, frame, value, out);
      return;
    case 'record':
      feedRecord(stack, frame, value, out);
      return;
  }
}

/** Pushes the frame of a `node` value that begins with the byte `value`. The top frame of `parent` already waits for it. */
function startValue(node: GrammarNode, value: number, parent: Stack, out: Stack[]): void {
  switch (node.kind) {
    case 'literal': {
      const candidates: number[] = [];
      node.alternatives.forEach((alternative, index) => {
        if (alternative[0] === value) candidates.push(index);
      });
      if (candidates.length > 0) pushLiteral(parent, node, candidates, 1, out);
      return;
    }
    case 'string':
      if (value === byte.quote) out.push({ frame: { kind: 'string', node, length: 0, mode: StringMode.Body, pending: 0, low: 0, high: 0 }, parent });
      return;
    case 'number': {
      const frame: NumberFrame = { kind: 'number', node, negative: false, digits: '', fraction: -1 };
      if (value === byte.minus) {
        const negative: NumberFrame = { ...frame, negative: true };
        if (numberIsFeasible(negative)) out.push({ frame: negative, parent });
        return;
      }
      const started = numberWithDigit(frame, value);
      if (started !== undefined) out.push({ frame: started, parent });
      return;
    }
    case 'array':
      if (value === byte.openBracket) out.push({ frame: { kind: 'array', node, phase: 'open', count: 0 }, parent });
      return;
    case 'object':
      if (value === byte.openBrace) {
        out.push({ frame: { kind: 'object', node, phase: 'open', next: 0, used: 0, candidates: [], offset: 0, current: -1 }, parent });
      }
      return;
    case 'record':
      if (value === byte.openBrace) out.push({ frame: { kind: 'record', node, phase: 'open' }, parent });
      return;
    case 'union':
      for (const option of node.options) startValue(option, value, parent, out);
      return;
  }
}

function pushLiteral(parent: Stack, node: LiteralNode, candidates: number[], offset: number, out: Stack[]): void {
  let complete = false;
  let longer = false;
  for (const index of candidates) {
    if (node.alternatives[index]!.length === offset) complete = true;
    else longer = true;
  }
  if (!longer) {
    out.push(replaceTop(parent, afterChild(parent.frame)));
    return;
  }
  out.push({ frame: { kind: 'literal', node, candidates, offset, complete }, parent });
}

function feedLiteral(stack: Stack, frame: LiteralFrame, value: number, out: Stack[]): void {
  if (frame.complete) feed(finish(stack), value, out);

  const candidates = frame.candidates.filter((index) => frame.node.alternatives[index]![frame.offset] === value);
  if (candidates.length > 0) pushLiteral(stack.parent!, frame.node, candidates, frame.offset + 1, out);
}

function feedString(stack: Stack, frame: StringFrame, value: number, out: Stack[]): void {
  if (frame.mode !== StringMode.Body) {
    feedStringEscape(stack, frame, value, out);
    return;
  }

  const maxLength = frame.node.maxLength;
  if (frame.pending === 0 && value === byte.quote) {
    if (frame.length >= frame.node.minLength) out.push(finish(stack));
    return;
  }
  if (frame.pending === 0 && value === byte.backslash) {
    // Every escape decodes to one code point (surrogate escapes are rejected), so it is counted here.
    if (frame.length + 1 <= maxLength) out.push(replaceTop(stack, { ...frame, mode: StringMode.Escape, length: frame.length + 1 }));
    return;
  }
  const cursor: StringCursor = { length: 0, pending: 0, low: 0, high: 0 };
  if (advanceStringText(frame, maxLength, value, cursor)) out.push(replaceTop(stack, { ...frame, ...cursor }));
}

function feedStringEscape(stack: Stack, frame: StringFrame, value: number, out: Stack[]): void {
  if (frame.mode === StringMode.Escape) {
    if (simpleEscapes.has(value)) out.push(replaceTop(stack, { ...frame, mode: StringMode.Body }));
    else if (value === byte.u) out.push(replaceTop(stack, { ...frame, mode: StringMode.Hex0 }));
    return;
  }

  const digit = hexValue(value);
  if (digit < 0) return;
  // A \uD800–\uDFFF escape would put a lone surrogate into the parsed string.
  if (frame.mode === StringMode.Hex1AfterD && digit >= 8) return;
  out.push(replaceTop(stack, { ...frame, mode: nextHexMode(frame.mode, digit) }));
}

function nextHexMode(mode: StringMode, digit: number): StringMode {
  switch (mode) {
    case StringMode.Hex0:
      return digit === 0xd ? StringMode.Hex1AfterD : StringMode.Hex1;
    case StringMode.Hex1:
    case StringMode.Hex1AfterD:
      return StringMode.Hex2;
    case StringMode.Hex2:
      return StringMode.Hex3;
    default:
      return StringMode.Body;
  }
}

function feedNumber(stack: Stack, frame: NumberFrame, value: number, out: Stack[]): void {
  if (numberCanFinish(frame)) feed(finish(stack), value, out);

  if (value === byte.point) {
    if (!frame.node.integer && frame.fraction < 0 && frame.digits !== '') out.push(replaceTop(stack, { ...frame, fraction: 0 }));
    return;
  }
  const next = numberWithDigit(frame, value);
  if (next !== undefined) out.push(replaceTop(stack, next));
}

/** Returns the frame after one more digit, or undefined when the digit is not a valid continuation. */
function numberWithDigit(frame: NumberFrame, value: number): NumberFrame | undefined {
  if (value < byte.zero || value > byte.nine) return undefined;
  const digit = String.fromCharCode(value);

  if (frame.fraction >= 0) {
    return frame.fraction < maxNumberDigits ? { ...frame, fraction: frame.fraction + 1 } : undefined;
  }
  // JSON forbids leading zeros, so nothing but a point may follow a leading 0.
  if (frame.digits === '0') return undefined;
  const next = { ...frame, digits: frame.digits + digit };
  if (!frame.node.integer) return next.digits.length <= maxNumberDigits ? next : undefined;
  return numberIsFeasible(next) ? next : undefined;
}

export function numberCanFinish(frame: NumberFrame): boolean {
  if (frame.digits === '' || frame.fraction === 0) return false;
  if (!frame.node.integer) return true;
  const value = frame.negative ? -Number(frame.digits) : Number(frame.digits);
  return value >= frame.node.minimum && value <= frame.node.maximum;
}

/**
 * True when some integer that starts with this sign and these digits lies within the node's
 * bounds. Appending k digits to D spans D·10^k to D·10^k + 10^k − 1, so each k is one interval.
 */
function numberIsFeasible(frame: NumberFrame): boolean {
  const { minimum, maximum } = frame.node;
  if (!frame.node.integer) return true;
  if (frame.digits === '') return frame.negative ? minimum <= -1 : true;

  const base = Number(frame.digits);
  const limit = Math.max(Math.abs(minimum), Math.abs(maximum));
  for (let scale = 1; ; scale *= 10) {
    const low = base * scale;
    const high = low + scale - 1;
    const [from, to] = frame.negative ? [-high, -low] : [low, high];
    if (to >= minimum && from <= maximum) return true;
    if (low > limit || frame.digits === '0') return false;
  }
}

function feedArray(stack: Stack, frame: ArrayFrame, value: number, out: Stack[]): void {
  const node = frame.node;
  const waiting = replaceTop(stack, { ...frame, phase: 'item' });
  switch (frame.phase) {
    case 'open':
      if (value === byte.closeBracket && node.minItems === 0) out.push(finish(stack));
      else if (node.maxItems > 0) startValue(node.items, value, waiting, out);
      return;
    case 'afterItem':
      if (value === byte.comma && frame.count < node.maxItems) out.push(replaceTop(stack, { ...frame, phase: 'next' }));
      else if (value === byte.closeBracket && frame.count >= node.minItems) out.push(finish(stack));
      return;
    case 'next':
      startValue(node.items, value, waiting, out);
      return;
    case 'item':
      return;
  }
}

function feedObject(stack: Stack, frame: ObjectFrame, value: number, out: Stack[]): void {
  switch (frame.phase) {
    case 'open':
      if (value === byte.closeBrace && !hasRequiredLeft(frame)) out.push(finish(stack));
      else readKeyByte(stack, { ...frame, candidates: keyCandidates(frame), offset: 0 }, value, out);
      return;
    case 'afterValue':
      if (value === byte.comma && keyCandidates(frame).length > 0) out.push(replaceTop(stack, { ...frame, phase: 'next' }));
      else if (value === byte.closeBrace && !hasRequiredLeft(frame)) out.push(finish(stack));
      return;
    case 'next':
      readKeyByte(stack, { ...frame, candidates: keyCandidates(frame), offset: 0 }, value, out);
      return;
    case 'key':
      readKeyByte(stack, frame, value, out);
      return;
    case 'value': {
      const property = frame.node.properties[frame.current]!;
      startValue(property.value, value, replaceTop(stack, { ...frame, phase: 'inValue' }), out);
      return;
    }
    case 'inValue':
      return;
  }
}

function readKeyByte(stack: Stack, frame: ObjectFrame, value: number, out: Stack[]): void {
  const properties = frame.node.properties;
  const candidates = frame.candidates.filter((index) => properties[index]!.keyBytes[frame.offset] === value);
  if (candidates.length === 0) return;

  // Key bytes end with `":` and a quote inside a name is escaped, so no key is a prefix of another.
  const offset = frame.offset + 1;
  const only = candidates.length === 1 ? candidates[0]! : -1;
  if (only >= 0 && properties[only]!.keyBytes.length === offset) {
    out.push(replaceTop(stack, { ...frame, phase: 'value', candidates: [], offset: 0, current: only }));
    return;
  }
  out.push(replaceTop(stack, { ...frame, phase: 'key', candidates, offset }));
}

/** Properties whose key may come next: the unwritten ones, or in order up to the next required one. */
export function keyCandidates(frame: ObjectFrame): number[] {
  const properties = frame.node.properties;
  const candidates: number[] = [];
  if (frame.node.anyOrder) {
    for (let index = 0; index < properties.length; index++) {
      if ((frame.used & (1 << index)) === 0) candidates.push(index);
    }
    return candidates;
  }
  for (let index = frame.next; index < properties.length; index++) {
    candidates.push(index);
    if (properties[index]!.required) break;
  }
  return candidates;
}

function hasRequiredLeft(frame: ObjectFrame): boolean {
  const properties = frame.node.properties;
  if (frame.node.anyOrder) return properties.some((property, index) => property.required && (frame.used & (1 << index)) === 0);
  return properties.slice(frame.next).some((property) => property.required);
}

function feedRecord(stack: Stack, frame: RecordFrame, value: number, out: Stack[]): void {
  const node = frame.node;
  switch (frame.phase) {
    case 'open':
      if (value === byte.closeBrace) out.push(finish(stack));
      else startValue(node.key, value, replaceTop(stack, { ...frame, phase: 'inKey' }), out);
      return;
    case 'afterValue':
      if (value === byte.comma) out.push(replaceTop(stack, { ...frame, phase: 'next' }));
      else if (value === byte.closeBrace) out.push(finish(stack));
      return;
    case 'next':
      startValue(node.key, value, replaceTop(stack, { ...frame, phase: 'inKey' }), out);
      return;
    case 'colon':
      if (value === byte.colon) out.push(replaceTop(stack, { ...frame, phase: 'value' }));
      return;
    case 'value':
      startValue(node.value, value, replaceTop(stack, { ...frame, phase: 'inValue' }), out);
      return;
    case 'inKey':
    case 'inValue':
      return;
  }
}
