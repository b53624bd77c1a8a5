/**
 * Computes which token ids may follow a matcher state. The vocabulary's byte sequences form a
 * trie, and the matcher walks it depth first: a subtree is skipped as soon as its prefix fits no
 * value, so one walk costs about as many byte steps as there are allowed prefixes. Masks are
 * cached by a state key that treats states alike when they accept the same byte sequences up to
 * the longest token, so a long string body reuses one mask for most of its length.
 */
import type { GrammarNode, StringNode } from './grammar.ts';
import { advanceByte, canEnd, stateKey, stringTextTop, withStringCursor, type MatcherState, type Stack } from './matcher.ts';
import { advanceStringText, backslashByte, quoteByte, type StringCursor } from './string-text.ts';
import type { TokenVocabulary } from './vocabulary.ts';

/** The vocabulary's byte sequences as a trie in flat arrays, with the root at node 0. */
export interface VocabularyTrie {
  readonly firstChild: Int32Array;
  readonly nextSibling: Int32Array;
  /** The byte on the edge into each node. */
  readonly edgeByte: Uint8Array;
  /** The token id whose bytes end at each node, or -1. */
  readonly tokenAt: Int32Array;
  /** Further ids at nodes where several tokens have the same bytes. */
  readonly extraTokensAt: ReadonlyMap<number, readonly number[]>;
  /** The length in bytes of the longest token. */
  readonly maxTokenBytes: number;
}

/** Allowed token ids for one state, as a flag per id (1 = allowed), end tokens included. Masks are cached and shared, so callers must not modify them. */
export interface TokenMask {
  readonly allowed: Uint8Array;
  readonly allowedCount: number;
}

export interface MaskCacheStats {
  lookups: number;
  hits: number;
  entries: number;
}


const trieByVocabulary = new WeakMap<TokenVocabulary, VocabularyTrie>();

/** Builds the trie of a vocabulary once and returns the same trie for later calls. */
export function vocabularyTrie(vocabulary: TokenVocabulary): VocabularyTrie {
  const cached = trieByVocabulary.get(vocabulary);
  if (cached !== undefined) return cached;

  interface BuildNode {
    children: Map<number, BuildNode>;
    tokens: number[];
  }
  const root: BuildNode = { children: new Map(), tokens: [] };
  let nodeCount = 1;
  let maxTokenBytes = 0;
  vocabulary.tokenBytes.forEach((bytes, id) => {
    // An empty token would advance no state, so a sampler could repeat it forever.
    if (bytes === undefined || bytes.length === 0) return;
    maxTokenBytes = Math.max(maxTokenBytes, bytes.length);
    let node = root;
    for (const value of bytes) {
      let child = node.children.get(value);
      if (child === undefined) {
        child = { children: new Map(), tokens: [] };
        node.children.set(value, child);
        nodeCount++;
      }
      node = child;
    }
    node.tokens.push(id);
  });

  const firstChild = new Int32Array(nodeCount).fill(-1);
  const nextSibling = new Int32Array(nodeCount).fill(-1);
  const edgeByte = new Uint8Array(nodeCount);
  const tokenAt = new Int32Array(nodeCount).fill(-1);
  const extraTokensAt = new Map<number, number[]>();
  let nextIndex = 1;
  const flatten = (node: BuildNode, index: number) => {
    const [first, ...rest] = node.tokens;
    if (first !== undefined) tokenAt[index] = first;
    if (rest.length > 0) extraTokensAt.set(index, rest);

    let previous = -1;
    for (const [value, child] of [...node.children].sort((a, b) => a[0] - b[0])) {
      const childIndex = nextIndex++;
      edgeByte[childIndex] = value;
      if (previous < 0) firstChild[index] = childIndex;
      else nextSibling[previous] = childIndex;
      previous = childIndex;
      flatten(child, childIndex);
    }
  };
  flatten(root, 0);

  const trie = { firstChild, nextSibling, edgeByte, tokenAt, extraTokensAt, maxTokenBytes };
  trieByVocabulary.set(vocabulary, trie);
  return trie;
}

/** Computes and caches token masks for one grammar over one vocabulary. */
export class TokenMasker {
  private readonly trie: VocabularyTrie;
  private readonly cache = new Map<string, TokenMask>();
  private lookups = 0;
  private hits = 0;

  constructor(
    readonly grammar: GrammarNode,
    private readonly vocabulary: TokenVocabulary,
    private readonly endTokenIds: readonly number[],
    private readonly maxCachedMasks: number,
  ) {
    this.trie = vocabularyTrie(vocabulary);
  }

  mask(state: MatcherState): TokenMask {
    this.lookups++;
    const key = stateKey(state, this.trie.maxTokenBytes);
    const cached = this.cache.get(key);
    if (cached !== undefined) {
      this.hits++;
      // Re-inserting moves the entry to the end, so eviction drops the least recently used.
      this.cache.delete(key);
      this.cache.set(key, cached);
      return cached;
    }

    const mask = this.compute(state);
    if (this.cache.size >= this.maxCachedMasks) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(key, mask);
    return mask;
  }

  stats(): MaskCacheStats {
    return { lookups: this.lookups, hits: this.hits, entries: this.cache.size };
  }

  private compute(state: MatcherState): TokenMask {
    const allowed = new Uint8Array(this.vocabulary.size);
    let allowedCount = this.walk(0, state, allowed);
    if (canEnd(state)) {
      for (const id of this.endTokenIds) {
        if (allowed[id] === 0) allowedCount++;
        allowed[id] = 1;
      }
    }
    return { allowed, allowedCount };
  }

  /** Flags every token below `node` whose bytes `state` accepts and returns how many it flagged. */
  private walk(node: number, state: MatcherState, allowed: Uint8Array): number {
    const text = stringTextTop(state);
    if (text !== undefined) return this.walkStringText(node, text.stack, text.node, text.cursor, allowed);

    const { firstChild, nextSibling, edgeByte } = this.trie;
    let count = 0;
    for (let child = firstChild[node]!; child >= 0; child = nextSibling[child]!) {
      const next = advanceByte(state, edgeByte[child]!);
      if (next.length === 0) continue;
      count += this.flagTokensAt(child, allowed);
      count += this.walk(child, next, allowed);
    }
    return count;
  }

  /**
   * Walks the trie inside string text, where most of the vocabulary is allowed. It advances a
   * plain cursor instead of allocating matcher frames, and returns to the general walk at a quote
   * or backslash. On a 2-core x86 container this cut an uncached mask inside the turn schema's
   * reply from about 1 ms to 0.12 ms.
   */
  private walkStringText(node: number, stack: Stack, string: StringNode, cursor: StringCursor, allowed: Uint8Array): number {
    const { firstChild, nextSibling, edgeByte } = this.trie;
    const next: StringCursor = { length: 0, pending: 0, low: 0, high: 0 };
    let count = 0;
    for (let child = firstChild[node]!; child >= 0; child = nextSibling[child]!) {
      const value = edgeByte[child]!;
      if (advanceStringText(cursor, string.maxLength, value, next)) {
        count += this.flagTokensAt(child, allowed);
        count += this.walkStringText(child, stack, string, { ...next }, allowed);
        continue;
      }
      // A quote or backslash leaves plain text, so the general walk takes over from here.
      if (cursor.pending > 0 || (value !== quoteByte && value !== backslashByte)) continue;
      const after = advanceByte(withStringCursor(stack, cursor), value);
      if (after.length === 0) continue;
      count += this.flagTokensAt(child, allowed);
      count += this.walk(child, after, allowed);
    }
    return count;
  }

  private flagTokensAt(node: number, allowed: Uint8Array): number {
    const id = this.trie.tokenAt[node]!;
    if (id < 0) return 0;
    allowed[id] = 1;
    const extra = this.trie.extraTokensAt.get(node);
    if (extra === undefined) return 1;
    for (const other of extra) allowed[other] = 1;
    return 1 + extra.length;
  }
}
