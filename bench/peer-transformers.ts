/**
 * Runs a model folder through transformers.js `generate()`, from local files only, as the peer
 * for `npm run bench:engine`. Each call decodes one prompt greedily, as a user of that library
 * would call it, and records when the first new token arrived.
 */
import { basename, dirname, resolve } from 'node:path';
import { AutoModelForCausalLM, BaseStreamer, env, Tensor, type PreTrainedModel } from '@huggingface/transformers';

export interface PeerGeneration {
  /** New token ids only, end token included when the peer stopped on it. */
  tokenIds: number[];
  firstTokenMs: number;
  totalMs: number;
}

export interface PeerOptions {
  modelDir: string;
  intraOpThreads: number;
}

/** Records the time of the first `put` after the prompt, which carries the first new token. */
class FirstTokenClock extends BaseStreamer {
  private puts = 0;
  firstTokenAt = 0;

  override put(): void {
    this.puts++;
    if (this.puts === 2) this.firstTokenAt = performance.now();
  }

  override end(): void {}
}

export class TransformersPeer {
  private constructor(private readonly model: PreTrainedModel) {}

  /** Loads `onnx/model.onnx` of `modelDir` in fp32. Throws the library's own error when loading fails. */
  static async load(options: PeerOptions): Promise<TransformersPeer> {
    const dir = resolve(options.modelDir);
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = `${dirname(dir)}/`;

    const model = await AutoModelForCausalLM.from_pretrained(basename(dir), {
      dtype: 'fp32',
      local_files_only: true,
      // The same session settings as the engine's backend, so that only the serving loop differs.
      session_options: { intraOpNumThreads: options.intraOpThreads, interOpNumThreads: 1, graphOptimizationLevel: 'all' },
    });
    return new TransformersPeer(model);
  }

  /**
   * Decodes `maxNewTokens` tokens greedily after `promptIds`. With `stopAtEnd` false the end
   * token does not stop generation, so every call does the same amount of work.
   */
  async generate(promptIds: readonly number[], maxNewTokens: number, stopAtEnd: boolean): Promise<PeerGeneration> {
    const started = performance.now();
    const clock = new FirstTokenClock();
    const length = promptIds.length;
    const inputIds = new Tensor('int64', BigInt64Array.from(promptIds, (id) => BigInt(id)), [1, length]);
    const attentionMask = new Tensor('int64', new BigInt64Array(length).fill(1n), [1, length]);

    const options: Record<string, unknown> = {
      input_ids: inputIds,
      attention_mask: attentionMask,
      max_new_tokens: maxNewTokens,
      do_sample: false,
      streamer: clock,
    };
    // In transformers.js 4.3.2 a null eos_token_id removes the end-token stopping criterion.
    if (!stopAtEnd) options.eos_token_id = null;
    const output = (await this.model.generate(options)) as Tensor;
    const totalMs = performance.now() - started;

    const sequence = Array.from(output.data as BigInt64Array, Number);
    return { tokenIds: sequence.slice(length), firstTokenMs: clock.firstTokenAt - started, totalMs };
  }

  async close(): Promise<void> {
    await this.model.dispose();
  }
}
