/**
 * Token constraints for the engine's decode loop: each step masks the logits to the tokens that
 * keep the output a prefix of a valid JSON value, then advances by the sampled token. The end
 * token is allowed only once the value is complete, and nothing is allowed after it.
 */
import type { z } from 'zod';
import { ConstraintError } from './errors.ts';
import { grammarFromZod } from './from-zod.ts';
import { completionLength, maxCompletionLength, parentsLength, shortestCompletion, tokenizeBytes } from './completion.ts';
import { acceptsAnyByte, advanceBytes, canEnd, dedupeState, initialState, stringTextTop, type MatcherState } from './matcher.ts';
import { backslashByte, quoteByte } from './string-text.ts';
import { TokenMasker, vocabularyTrie, type MaskCacheStats } from './token-mask.ts';
import type { TokenVocabulary } from './vocabulary.ts';

export interface TokenConstraint {
  /**
   * Writes -Infinity into logits for every token not allowed now. logits has vocab length.
   * Throws ConstraintError `no_token_allowed` when no token fits, which a sound grammar over a
   * vocabulary with every single-byte token never reaches, and `constraint_finished` after the
   * end token.
   */
  maskLogits(logits: Float32Array): void;
  /** Advances by the chosen token; throws ConstraintError if it is not allowed. */
  accept(tokenId: number): void;
  /** True when the value is complete and only the end token may follow, and after the end token. */
  isComplete(): boolean;
  /**
   * Token ids that complete the value from here by the shortest path found: empty when the value
   * is complete, undefined when no completion is found. Values still to be written take their
   * shortest valid form, so this is for closing an output at its token limit, not for content.
   */
  completion(): number[] | undefined;
  /**
   * True when, after `tokenId`, the value can still be completed within `tokens` more tokens.
   * Leaves this constraint unchanged. Most calls settle on a byte count, which bounds the tokens.
   */
  fitsAfter(tokenId: number, tokens: number): boolean;
}

export interface ConstraintFactory {
  create(): TokenConstraint;
}

/**
 * A factory whose constraints share one mask cache, which `stats` reports on. Factories built for
 * the same schema object, vocabulary and options share that cache and its counters.
 */
export interface JsonSchemaConstraintFactory extends ConstraintFactory {
  stats(): MaskCacheStats;
}

export interface JsonSchemaConstraintOptions {
  /** Special tokens that end the output, such as `<|end|>`. */
  endTokenIds: number[];
  /** Max masks cached per schema and vocabulary. Beyond it the least recently used mask is dropped. */
  maxCachedMasks?: number;
}

/** One cached mask takes one byte per token id, so 4096 masks over a 3000-token vocabulary take about 12 MB. */
const defaultMaxCachedMasks = 4096;

const maskersByVocabulary = new WeakMap<TokenVocabulary, WeakMap<z.ZodType, Map<string, TokenMasker>>>();

/**
 * Builds constraints that keep the output a JSON text of `schema` followed by an end token.
 * Throws ConstraintError `unsupported_schema` or `invalid_schema` here, before any decoding.
 * Calls with the same schema, vocabulary and options share one mask cache.
 */
export function jsonSchemaConstraint(schema: z.ZodType, vocabulary: TokenVocabulary, options: JsonSchemaConstraintOptions): JsonSchemaConstraintFactory {
  checkEndTokens(vocabulary, options.endTokenIds);
  const masker = sharedMasker(schema, vocabulary, options);
  return {
    create: () => new JsonTokenConstraint(masker, vocabulary, options.endTokenIds),
    stats: () => masker.stats(),
  };
}

function checkEndTokens(vocabulary: TokenVocabulary, endTokenIds: readonly number[]): void {
  if (endTokenIds.length === 0) {
    throw new ConstraintError('invalid_options', 'endTokenIds is empty; pass the id of the end token, such as <|end|>');
  }
  for (const id of endTokenIds) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabulary.size || vocabulary.tokenBytes[id] !== undefined) {
      throw new ConstraintError('invalid_options', `end token id ${id} is not a special token of this vocabulary; special tokens: ${[...vocabulary.specialTokens].map(([content, tokenId]) => `${content}=${tokenId}`).join(', ')}`);
    }
  }
}

function sharedMasker(schema: z.ZodType, vocabulary: TokenVocabulary, options: JsonSchemaConstraintOptions): TokenMasker {
  let bySchema = maskersByVocabulary.get(vocabulary);
  if (bySchema === undefined) {
    bySchema = new WeakMap();
    maskersByVocabulary.set(vocabulary, bySchema);
  }
  let byOptions = bySchema.get(schema);
  if (byOptions === undefined) {
    byOptions = new Map();
    bySchema.set(schema, byOptions);
  }

  const maxCachedMasks = options.maxCachedMasks ?? defaultMaxCachedMasks;
  const key = `${[...options.endTokenIds].sort((a, b) => a - b).join(',')}/${maxCachedMasks}`;
  let masker = byOptions.get(key);
  if (masker === undefined) {
    masker = new TokenMasker(grammarFromZod(schema), vocabulary, options.endTokenIds, maxCachedMasks);
    byOptions.set(key, masker);
  }
  return masker;
}

/** True when the bytes read form a complete value that no further byte could extend. */
function valueComplete(state: MatcherState): boolean {
  return canEnd(state) && !acceptsAnyByte(state);
}

class JsonTokenConstraint implements TokenConstraint {
  private state: MatcherState;
  private ended = false;
  /** Bytes that complete the value from any state at most, so a larger budget always fits. */
  private readonly maxCompletion: number;

  constructor(
    private readonly masker: TokenMasker,
    private readonly vocabulary: TokenVocabulary,
    private readonly endTokenIds: readonly number[],
  ) {
    this.state = initialState(masker.grammar);
    this.maxCompletion = maxCompletionLength(masker.grammar);
  }

  maskLogits(logits: Float32Array): void {
    this.rejectAfterEnd();
    const { allowed, allowedCount } = this.masker.mask(this.state);
    if (allowedCount === 0) {
      throw new ConstraintError('no_token_allowed', 'no token of the vocabulary continues the constrained output; the vocabulary lacks a single-byte token that the grammar needs here');
    }
    for (let id = 0; id < logits.length; id++) {
      if (allowed[id] !== 1) logits[id] = -Infinity;
    }
  }

  accept(tokenId: number): void {
    this.rejectAfterEnd();
    if (this.endTokenIds.includes(tokenId)) {
      if (!canEnd(this.state)) throw this.notAllowed(tokenId, 'the JSON value is not complete yet');
      this.ended = true;
      return;
    }

    const bytes = this.vocabulary.tokenBytes[tokenId];
    if (bytes === undefined || bytes.length === 0) throw this.notAllowed(tokenId, 'it is a special token or outside the vocabulary');
    const next = advanceBytes(this.state, bytes);
    if (next.length === 0) throw this.notAllowed(tokenId, 'its bytes do not continue a valid value');
    this.state = dedupeState(next);
  }

  isComplete(): boolean {
    return this.ended || valueComplete(this.state);
  }

  completion(): number[] | undefined {
    return this.ended ? [] : this.completionFrom(this.state);
  }

  fitsAfter(tokenId: number, tokens: number): boolean {
    if (this.ended) return false;
    if (this.endTokenIds.includes(tokenId)) return canEnd(this.state);
    const bytes = this.vocabulary.tokenBytes[tokenId];
    if (bytes === undefined || bytes.length === 0) return false;
    // Cheap checks first: far from the limit, and inside a string's text.
    if (tokens >= this.maxCompletion) return true;
    const text = stringTextTop(this.state);
    if (text !== undefined && !bytes.includes(quoteByte) && !bytes.includes(backslashByte)) {
      if (maxCompletionLength(text.node) + parentsLength(text.stack.parent!) <= tokens) return true;
    }

    const next = advanceBytes(this.state, bytes);
    if (next.length === 0) return false;
    if (completionLength(next) <= tokens) return true;
    return (this.completionFrom(next)?.length ?? Infinity) <= tokens;
  }

  private completionFrom(state: MatcherState): number[] | undefined {
    if (valueComplete(state)) return [];
    const bytes = shortestCompletion(state);
    return bytes === undefined ? undefined : tokenizeBytes(vocabularyTrie(this.vocabulary), bytes);
  }

  private rejectAfterEnd(): void {
    if (this.ended) throw new ConstraintError('constraint_finished', 'the end token was already accepted; stop decoding this sequence');
  }

  private notAllowed(tokenId: number, reason: string): ConstraintError {
    const bytes = this.vocabulary.tokenBytes[tokenId];
    const text = bytes === undefined ? '(no bytes)' : JSON.stringify(new TextDecoder().decode(bytes));
    return new ConstraintError('token_not_allowed', `token ${tokenId} ${text} is not allowed here because ${reason}; sample from the masked logits`);
  }
}
