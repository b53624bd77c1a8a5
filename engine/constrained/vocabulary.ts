/**
 * The tokenizer's vocabulary as raw bytes per token id. A byte-level BPE token is often part of
 * a UTF-8 character, and decoding it alone yields U+FFFD, so the bytes come from the token
 * strings through the byte-to-character table of the ByteLevel pre-tokenizer (GPT-2's
 * `bytes_to_unicode`).
 */
import type { Tokenizer } from '@huggingface/tokenizers';
import type { TextTokenizer } from '../tokenizer.ts';
import { ConstraintError } from './errors.ts';

export interface TokenVocabulary {
  /** Token ids run from 0 to size − 1. */
  readonly size: number;
  /** UTF-8 bytes of each token, or undefined for special tokens, which stand for no text. */
  readonly tokenBytes: readonly (Uint8Array | undefined)[];
  /** Special token ids by content, for example `<|end|>`. */
  readonly specialTokens: ReadonlyMap<string, number>;
}

type WrappedTokenizer = Pick<Tokenizer, 'get_vocab' | 'get_added_tokens_decoder' | 'id_to_token'>;

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Reads the byte sequence of every token id once per tokenizer. Throws ConstraintError
 * `invalid_vocabulary` when the tokenizer is not byte-level or its decoder disagrees with the
 * bytes read here.
 */
export function tokenVocabulary(tokenizer: TextTokenizer): TokenVocabulary {
  const wrapped = wrappedTokenizer(tokenizer);
  const byteOfChar = byteLevelDecoder();

  const vocabulary = wrapped.get_vocab(true);
  const size = Math.max(-1, ...vocabulary.values()) + 1;
  const addedTokens = wrapped.get_added_tokens_decoder();
  const tokenBytes: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(size).fill(undefined);
  const specialTokens = new Map<string, number>();

  for (let id = 0; id < size; id++) {
    const added = addedTokens.get(id);
    if (added?.special) {
      specialTokens.set(added.content, id);
      continue;
    }
    if (added !== undefined) {
      tokenBytes[id] = utf8.encode(added.content);
      continue;
    }
    const token = wrapped.id_to_token(id);
    if (token !== undefined) tokenBytes[id] = bytesOfToken(token, id, byteOfChar);
  }

  checkAgainstDecoder(tokenizer, tokenBytes);
  return { size, tokenBytes, specialTokens };
}

function wrappedTokenizer(tokenizer: TextTokenizer): WrappedTokenizer {
  return tokenizer.vocabularyTables;
}

function bytesOfToken(token: string, id: number, byteOfChar: ReadonlyMap<string, number>): Uint8Array {
  const chars = [...token];
  const bytes = new Uint8Array(chars.length);
  chars.forEach((char, index) => {
    const value = byteOfChar.get(char);
    if (value === undefined) {
      throw new ConstraintError('invalid_vocabulary', `token ${id} (${JSON.stringify(token)}) contains ${JSON.stringify(char)}, which is not a byte-level character; constrained decoding needs a ByteLevel BPE tokenizer`);
    }
    bytes[index] = value;
  });
  return bytes;
}

/**
 * Builds the inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves and the
 * other 68 bytes are shifted to U+0100 and up, in byte order.
 */
function byteLevelDecoder(): Map<string, number> {
  const printable = (value: number) => (value >= 0x21 && value <= 0x7e) || (value >= 0xa1 && value <= 0xac) || (value >= 0xae && value <= 0xff);
  const byteOfChar = new Map<string, number>();
  let shifted = 0;
  for (let value = 0; value < 256; value++) {
    const codePoint = printable(value) ? value : 256 + shifted++;
    byteOfChar.set(String.fromCodePoint(codePoint), value);
  }
  return byteOfChar;
}

/** Compares the bytes of every token that is whole UTF-8 text with what the tokenizer decodes it to. */
function checkAgainstDecoder(tokenizer: TextTokenizer, tokenBytes: readonly (Uint8Array | undefined)[]): void {
  tokenBytes.forEach((bytes, id) => {
    if (bytes === undefined) return;
    let text: string;
    try {
      text = strictUtf8.decode(bytes);
    } catch {
      return;
    }
    const decoded = tokenizer.decode([id]);
    if (decoded !== text) {
      throw new ConstraintError('invalid_vocabulary', `token ${id} decodes to ${JSON.stringify(decoded)} but its byte-level bytes read ${JSON.stringify(text)}; the tokenizer's decoder is not plain ByteLevel`);
    }
  });
}
