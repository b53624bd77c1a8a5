/** Text ↔ token ids through a Hugging Face tokenizer.json, with incremental decoding for streams. */
import { Tokenizer } from '@huggingface/tokenizers';
import { EngineError } from './errors.ts';
import type { ModelFiles } from './model-dir.ts';

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;

  /** UTF-8 bytes of the longest token, so a prompt of n bytes has at least n / maxTokenBytes tokens. */
  readonly maxTokenBytes: number;

  constructor(model: Pick<ModelFiles, 'tokenizerJson' | 'tokenizerConfig'> & { dir?: string }) {
    try {
      this.tokenizer = new Tokenizer(model.tokenizerJson as never, model.tokenizerConfig as never);
      let longest = 1;
      for (const token of this.tokenizer.get_vocab(true).keys()) longest = Math.max(longest, Buffer.byteLength(token));
      this.maxTokenBytes = longest;
    } catch (cause) {
      throw new EngineError('model_load_failed', `invalid tokenizer.json or tokenizer_config.json in ${model.dir ?? 'the model folder'}: ${(cause as Error).message}`, { cause });
    }
  }

  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[]): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: true });
  }

  /** The vocabulary tables of the wrapped tokenizer, for building token masks. */
  get vocabularyTables(): Pick<Tokenizer, 'get_vocab' | 'get_added_tokens_decoder' | 'id_to_token'> {
    return this.tokenizer;
  }

  tokenId(token: string): number | undefined {
    const ids = this.tokenizer.encode(token, { add_special_tokens: false }).ids;
    return ids.length === 1 ? ids[0] : undefined;
  }
}

/**
 * Decodes a growing id list and returns only the newly completed text, decoding a few tokens
 * per call instead of the whole list (the prefix/read offsets of vLLM's incremental
 * detokenizer). The tokens before `readOffset` give the context that decoders which strip
 * or merge spaces at a boundary need. A multi-byte character split across tokens decodes to
 * U+FFFD until its last byte arrives, so that tail is held back.
 */
export class StreamDecoder {
  private prefixOffset = 0;
  private readOffset = 0;
  /** Decoded ids[prefixOffset, readOffset), kept while the offsets stay put. */
  private prefixText: string | undefined = '';

  constructor(private readonly tokenizer: TextTokenizer) {}

  push(ids: readonly number[]): string {
    if (ids.length === 0) return '';
    const prefix = this.prefix(ids);
    const text = this.tokenizer.decode(ids.slice(this.prefixOffset));
    if (text.length <= prefix.length || text.endsWith('\uFFFD')) return '';
    const delta = text.slice(prefix.length);
    this.prefixOffset = this.readOffset;
    this.readOffset = ids.length;
    this.prefixText = this.prefixOffset === this.readOffset ? '' : undefined;
    return delta;
  }

  /**
   * Returns the text that `push` still holds back, for when the output ends. A character cut
   * off at the end decodes to U+FFFD, which is dropped, so complete characters before it are kept.
   */
  flush(ids: readonly number[]): string {
    if (this.prefixOffset >= ids.length) return '';
    const prefix = this.prefix(ids);
    const text = this.tokenizer.decode(ids.slice(this.prefixOffset)).replace(/\uFFFD+$/, '');
    this.prefixOffset = this.readOffset = ids.length;
    this.prefixText = '';
    return text.length > prefix.length ? text.slice(prefix.length) : '';
  }

  private prefix(ids: readonly number[]): string {
    this.prefixText ??= this.tokenizer.decode(ids.slice(this.prefixOffset, this.readOffset));
    return this.prefixText;
  }
}
