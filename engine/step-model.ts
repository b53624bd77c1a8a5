/**
 * The only module that imports onnxruntime-node. A StepModel runs one forward call over new
 * tokens that attend to given past keys and values, and returns only what the engine keeps:
 * the last position's logits and the new tokens' keys and values.
 *
 * Two graph layouts are served:
 * - the step graph (onnx/model.step.onnx), Sanfang's own export: past keys in, new keys out,
 *   an additive attention bias, last-position logits and queries, expert counts;
 * - the standard decoder layout (onnx/model.onnx) that Optimum and transformers.js use, so any
 *   exported decoder runs without code changes. Its graph returns the whole present cache,
 *   which this adapter slices; it has no queries, so sparse attention picks recent pages.
 */
import * as ort from 'onnxruntime-node';
import { basename } from 'node:path';
import { EngineError } from './errors.ts';
import { checkStepGraph, type ModelFiles } from './model-dir.ts';

/** Added to the attention score of a key a query may not see. */
export const maskedBias = -1e9;

export interface StepCall {
  batch: number;
  seq: number;
  past: number;
  inputIds: BigInt64Array;
  positionIds: BigInt64Array;
  /** batch × seq × (past + seq): 0 where a query may see a key, maskedBias where not. */
  bias: Float32Array;
  /** Per layer, [batch, kvHeads, past, headDim] (longer arrays are read from the start). */
  pastKeys: Float32Array[];
  pastValues: Float32Array[];
}

export interface StepResult {
  /** batch × vocab, for each row's last position. */
  logits: Float32Array;
  /** Per layer, [batch, kvHeads, seq, headDim]; keys post-RoPE. */
  newKeys: Float32Array[];
  newValues: Float32Array[];
  /** Per layer, [batch, heads, headDim]: each row's last post-RoPE query, when the graph gives it. */
  lastQueries?: Float32Array[];
  /** [layers, experts]: routed assignments per expert in this call, when the graph gives them. */
  expertCounts?: Float32Array;
}

export interface StepModel {
  readonly layout: 'step' | 'standard';
  /** The graph file this model runs. */
  readonly path: string;
  /** Whether the graph honours an arbitrary bias; the standard layout adds its own causal mask. */
  readonly arbitraryBias: boolean;
  readonly numExperts: number;
  /**
   * Expert assignments per layer and expert of one padding token (id 0 at position 0,
   * attending only to itself), measured at load. Undefined when the graph gives no counts.
   * Every padding token of a grouped prefill routes the same way, so the engine subtracts these.
   */
  readonly paddingExpertCounts?: Float32Array;
  run(call: StepCall): Promise<StepResult>;
  close(): Promise<void>;
}

export type ExecutionProvider = 'cpu' | 'cuda';

export interface StepModelOptions {
  executionProvider: ExecutionProvider;
  intraOpThreads: number;
  /**
   * A graph file name under onnx/, or 'auto': the first step graph of `stepGraphNames` present,
   * else the standard model.onnx.
   */
  graph: string;
}

async function createSession(path: string, options: StepModelOptions): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(path, {
      executionProviders: [options.executionProvider],
      intraOpNumThreads: options.intraOpThreads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
    });
  } catch (cause) {
    throw new EngineError('model_load_failed', `failed to load ${path}: ${(cause as Error).message}`, { cause });
  }
}

export async function loadStepModel(model: ModelFiles, options: StepModelOptions): Promise<StepModel> {
  const path = options.graph === 'auto' ? ([...model.stepGraphs.values()][0] ?? model.onnxPath) : graphPath(model, options.graph);
  if (path !== model.onnxPath) checkStepGraph(model, path);
  const session = await createSession(path, options);
  const step = session.inputNames.includes('attention_bias');
  const expected = step ? ['input_ids', 'position_ids', 'past_key.0'] : ['input_ids', 'attention_mask', 'past_key_values.0.key'];
  const missing = expected.filter((name) => !session.inputNames.includes(name));
  if (missing.length > 0) {
    await session.release();
    throw new EngineError('model_load_failed', `${path} lacks ${step ? 'step graph' : 'decoder'} inputs ${missing.join(', ')}; expected the standard decoder layout or a step graph`);
  }
  const stepModel = step ? new StepGraph(session, model, path) : new StandardGraph(session, model, path);
  try {
    await checkShapes(stepModel, model, session);
  } catch (error) {
    await session.release();
    throw error;
  }
  return stepModel;
}

/** Runs one token through the graph and checks its outputs against config.json's sizes. */
async function checkShapes(stepModel: StepModel, model: ModelFiles, session: ort.InferenceSession): Promise<void> {
  const mismatch = (detail: string) =>
    new EngineError('model_load_failed', `${model.dir}/config.json does not match ${stepModel.path}: ${detail}; fix config.json or re-export the graph`);
  const layerOutputs = session.outputNames.filter((name) => /^(new_key|present)\.\d+(\.key)?$/.test(name)).length;
  if (layerOutputs !== model.numLayers) throw mismatch(`num_hidden_layers is ${model.numLayers}, the graph has ${layerOutputs} layers`);
  const empty = Array.from({ length: model.numLayers }, () => new Float32Array(0));
  let result: StepResult;
  try {
    result = await stepModel.run({ batch: 1, seq: 1, past: 0, inputIds: new BigInt64Array(1), positionIds: new BigInt64Array(1), bias: new Float32Array(1), pastKeys: empty, pastValues: empty });
  } catch (cause) {
    throw mismatch(`a one-token call failed (${(cause as Error).message})`);
  }
  if (result.logits.length !== model.vocabSize) throw mismatch(`vocab_size is ${model.vocabSize}, the graph returns ${result.logits.length} logits`);
  const keyFloats = result.newKeys[0]?.length ?? 0;
  if (keyFloats !== model.numKvHeads * model.headDim) {
    throw mismatch(`num_key_value_heads × head_dim is ${model.numKvHeads * model.headDim}, the graph returns ${keyFloats} key values per token`);
  }
  if (result.lastQueries && result.lastQueries[0]!.length !== model.numHeads * model.headDim) {
    throw mismatch(`num_attention_heads × head_dim is ${model.numHeads * model.headDim}, the graph returns ${result.lastQueries[0]!.length} query values`);
  }
  if (result.expertCounts && result.expertCounts.length !== model.numLayers * model.numExperts) {
    throw mismatch(`the graph counts ${result.expertCounts.length} layer-expert pairs, config.json gives ${model.numLayers * model.numExperts}`);
  }
  // The probe is exactly one padding token: id 0 at position 0, seeing only itself.
  if (stepModel instanceof StepGraph && result.expertCounts) stepModel.paddingExpertCounts = result.expertCounts.slice();
}

function graphPath(model: ModelFiles, name: string): string {
  if (basename(model.onnxPath) === name) return model.onnxPath;
  const path = model.stepGraphs.get(name);
  if (!path) {
    const known = [basename(model.onnxPath), ...model.stepGraphs.keys()].join(', ');
    throw new EngineError('model_load_failed', `model file is missing: ${model.dir}/onnx/${name} (this folder has ${known})`);
  }
  return path;
}

function pastTensor(data: Float32Array, dims: number[]): ort.Tensor {
  const size = dims.reduce((a, b) => a * b, 1);
  return new ort.Tensor('float32', data.length === size ? data : data.subarray(0, size), dims);
}

async function runSession(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, call: StepCall) {
  try {
    return await session.run(feeds);
  } catch (cause) {
    throw new EngineError('inference_failed', `onnxruntime run failed at batch ${call.batch}, seq ${call.seq}, past ${call.past}: ${(cause as Error).message}`, { cause });
  }
}

class StepGraph implements StepModel {
  readonly layout = 'step';
  readonly arbitraryBias = true;
  readonly numExperts: number;
  paddingExpertCounts?: Float32Array;
  private readonly hasQueries: boolean;
  private readonly hasCounts: boolean;

  constructor(
    private readonly session: ort.InferenceSession,
    private readonly model: ModelFiles,
    readonly path: string,
  ) {
    this.numExperts = model.numExperts;
    this.hasQueries = session.outputNames.includes('last_query.0');
    this.hasCounts = session.outputNames.includes('expert_counts');
  }

  async run(call: StepCall): Promise<StepResult> {
    const { numLayers, numKvHeads, headDim } = this.model;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', call.inputIds, [call.batch, call.seq]),
      position_ids: new ort.Tensor('int64', call.positionIds, [call.batch, call.seq]),
      attention_bias: new ort.Tensor('float32', call.bias, [call.batch, call.seq, call.past + call.seq]),
    };
    const dims = [call.batch, numKvHeads, call.past, headDim];
    for (let layer = 0; layer < numLayers; layer++) {
      feeds[`past_key.${layer}`] = pastTensor(call.pastKeys[layer]!, dims);
      feeds[`past_value.${layer}`] = pastTensor(call.pastValues[layer]!, dims);
    }
    const results = await runSession(this.session, feeds, call);
    const data = (name: string) => results[name]!.data as Float32Array;
    const layers = Array.from({ length: numLayers }, (_, i) => i);
    return {
      logits: data('logits'),
      newKeys: layers.map((i) => data(`new_key.${i}`)),
      newValues: layers.map((i) => data(`new_value.${i}`)),
      lastQueries: this.hasQueries ? layers.map((i) => data(`last_query.${i}`)) : undefined,
      expertCounts: this.hasCounts ? data('expert_counts') : undefined,
    };
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/**
 * The standard layout: attention_mask [batch, past + seq] plus the graph's own causal mask. A
 * key is visible to a row when the row's last query may attend to it. That covers every bias
 * the engine builds for this layout: left padding and free slots, never packing.
 */
class StandardGraph implements StepModel {
  readonly layout = 'standard';
  readonly arbitraryBias = false;
  readonly numExperts = 0;
  private readonly hasPositions: boolean;

  constructor(
    private readonly session: ort.InferenceSession,
    private readonly model: ModelFiles,
    readonly path: string,
  ) {
    this.hasPositions = session.inputNames.includes('position_ids');
  }

  async run(call: StepCall): Promise<StepResult> {
    const { numLayers, numKvHeads, headDim, vocabSize } = this.model;
    const { batch, seq, past } = call;
    const total = past + seq;
    const mask = new BigInt64Array(batch * total);
    for (let row = 0; row < batch; row++) {
      const lastQuery = (row * seq + seq - 1) * total;
      for (let key = 0; key < total; key++) if (call.bias[lastQuery + key] === 0) mask[row * total + key] = 1n;
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', call.inputIds, [batch, seq]),
      attention_mask: new ort.Tensor('int64', mask, [batch, total]),
    };
    if (this.hasPositions) feeds.position_ids = new ort.Tensor('int64', call.positionIds, [batch, seq]);
    const dims = [batch, numKvHeads, past, headDim];
    for (let layer = 0; layer < numLayers; layer++) {
      feeds[`past_key_values.${layer}.key`] = pastTensor(call.pastKeys[layer]!, dims);
      feeds[`past_key_values.${layer}.value`] = pastTensor(call.pastValues[layer]!, dims);
    }
    const results = await runSession(this.session, feeds, call);

    const allLogits = results.logits!.data as Float32Array;
    if (allLogits.length !== batch * seq * vocabSize) {
      throw new EngineError('inference_failed', `the graph returned ${allLogits.length / (batch * seq)} logits per position, config.json gives vocab_size ${vocabSize}`);
    }
    const logits = new Float32Array(batch * vocabSize);
    for (let row = 0; row < batch; row++) {
      const from = (row * seq + seq - 1) * vocabSize;
      logits.set(allLogits.subarray(from, from + vocabSize), row * vocabSize);
    }
    const slice = (present: Float32Array) => {
      const out = new Float32Array(batch * numKvHeads * seq * headDim);
      for (let rowHead = 0; rowHead < batch * numKvHeads; rowHead++) {
        const from = (rowHead * total + past) * headDim;
        out.set(present.subarray(from, from + seq * headDim), rowHead * seq * headDim);
      }
      return out;
    };
    const newKeys: Float32Array[] = [];
    const newValues: Float32Array[] = [];
    for (let layer = 0; layer < numLayers; layer++) {
      newKeys.push(slice(results[`present.${layer}.key`]!.data as Float32Array));
      newValues.push(slice(results[`present.${layer}.value`]!.data as Float32Array));
    }
    return { logits, newKeys, newValues };
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
