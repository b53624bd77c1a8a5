/**
 * The only module that imports onnxruntime-node. It runs one forward step of a decoder in the
 * standard layout (input_ids, attention_mask, position_ids, past_key_values.N.key/value in;
 * logits, present.N.key/value out).
 */
import * as ort from 'onnxruntime-node';
import { EngineError } from './errors.ts';
import type { ModelFiles } from './model-dir.ts';

export interface StepInput {
  batchSize: number;
  /** New tokens per row; every row of one call has the same number. */
  sequenceLength: number;
  pastLength: number;
  inputIds: BigInt64Array;
  /** batchSize × (pastLength + sequenceLength); zeros mark left padding. */
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  /** Per layer, key then value: batchSize × kvHeads × pastLength × headDim. */
  past: Float32Array[];
}

export interface StepOutput {
  /** batchSize × sequenceLength × vocabSize. */
  logits: Float32Array;
  /** Per layer, key then value: batchSize × kvHeads × (pastLength + sequenceLength) × headDim. */
  present: Float32Array[];
}

export type ExecutionProvider = 'cpu' | 'cuda';

export interface OnnxBackendOptions {
  executionProvider: ExecutionProvider;
  intraOpThreads: number;
}

export class OnnxDecoderBackend {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly model: ModelFiles,
  ) {}

  static async load(model: ModelFiles, options: OnnxBackendOptions): Promise<OnnxDecoderBackend> {
    try {
      const session = await ort.InferenceSession.create(model.onnxPath, {
        executionProviders: [options.executionProvider],
        intraOpNumThreads: options.intraOpThreads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
      });
      const expected = ['input_ids', 'attention_mask', 'past_key_values.0.key'];
      const missing = expected.filter((name) => !session.inputNames.includes(name));
      if (missing.length > 0) {
        throw new EngineError('model_load_failed', `${model.onnxPath} lacks decoder inputs ${missing.join(', ')}; expected the standard decoder layout`);
      }
      return new OnnxDecoderBackend(session, model);
    } catch (cause) {
      if (cause instanceof EngineError) throw cause;
      throw new EngineError('model_load_failed', `failed to load ${model.onnxPath}: ${(cause as Error).message}`, { cause });
    }
  }

  async run(input: StepInput): Promise<StepOutput> {
    const { numLayers, numKvHeads, headDim } = this.model;
    const b = input.batchSize;
    const s = input.sequenceLength;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', input.inputIds, [b, s]),
      attention_mask: new ort.Tensor('int64', input.attentionMask, [b, input.pastLength + s]),
    };
    if (this.session.inputNames.includes('position_ids')) {
      feeds.position_ids = new ort.Tensor('int64', input.positionIds, [b, s]);
    }
    for (let layer = 0; layer < numLayers; layer++) {
      const dims = [b, numKvHeads, input.pastLength, headDim];
      feeds[`past_key_values.${layer}.key`] = new ort.Tensor('float32', input.past[2 * layer]!, dims);
      feeds[`past_key_values.${layer}.value`] = new ort.Tensor('float32', input.past[2 * layer + 1]!, dims);
    }

    let results: ort.InferenceSession.OnnxValueMapType;
    try {
      results = await this.session.run(feeds);
    } catch (cause) {
      throw new EngineError('inference_failed', `onnxruntime run failed at batch ${b}, past ${input.pastLength}: ${(cause as Error).message}`, { cause });
    }

    const present: Float32Array[] = [];
    for (let layer = 0; layer < numLayers; layer++) {
      present.push(results[`present.${layer}.key`]!.data as Float32Array, results[`present.${layer}.value`]!.data as Float32Array);
    }
    return { logits: results.logits!.data as Float32Array, present };
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
