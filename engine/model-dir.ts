/**
 * Reads and checks a model folder in the standard layout: config.json, tokenizer.json,
 * tokenizer_config.json (optional) and onnx/model.onnx (or onnx/decoder_model_merged.onnx).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { EngineError } from './errors.ts';

const configSchema = z.looseObject({
  vocab_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive().optional(),
  hidden_size: z.number().int().positive(),
  head_dim: z.number().int().positive().optional(),
  max_position_embeddings: z.number().int().positive(),
  eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).optional(),
  num_local_experts: z.number().int().positive().optional(),
  num_experts_per_tok: z.number().int().positive().optional(),
  rope_theta: z.number().positive().optional(),
  num_zero_experts: z.number().int().min(0).optional(),
});

export interface ModelFiles {
  dir: string;
  onnxPath: string;
  /** Step graphs in onnx/ (file name to path), in order of preference: the 8-bit one first. */
  stepGraphs: Map<string, string>;
  tokenizerJson: object;
  tokenizerConfig: Record<string, unknown>;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Routed experts per MoE layer, zero-computation experts included; 0 for a dense model. */
  numExperts: number;
  ropeTheta: number;
  headDim: number;
  vocabSize: number;
  maxContextTokens: number;
  eosTokenIds: number[];
  config: z.infer<typeof configSchema>;
}

function readJson(path: string): unknown {
  if (!existsSync(path)) throw new EngineError('model_load_failed', `model file is missing: ${path}`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new EngineError('model_load_failed', `model file is not valid JSON: ${path}`, { cause });
  }
}

export function readModelDir(dir: string): ModelFiles {
  if (!existsSync(dir)) throw new EngineError('model_load_failed', `model folder not found: ${dir}`);

  const configPath = join(dir, 'config.json');
  const parsed = configSchema.safeParse(readJson(configPath));
  if (!parsed.success) {
    throw new EngineError('model_load_failed', `invalid ${configPath}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  const config = parsed.data;

  const tokenizerJson = readJson(join(dir, 'tokenizer.json'));
  if (typeof tokenizerJson !== 'object' || tokenizerJson === null || !('model' in tokenizerJson)) {
    throw new EngineError('model_load_failed', `invalid ${join(dir, 'tokenizer.json')}: no "model" section`);
  }
  const tokenizerConfigPath = join(dir, 'tokenizer_config.json');
  const tokenizerConfig = existsSync(tokenizerConfigPath) ? (readJson(tokenizerConfigPath) as Record<string, unknown>) : {};

  const onnxPath = [join(dir, 'onnx', 'model.onnx'), join(dir, 'onnx', 'decoder_model_merged.onnx')].find((p) => existsSync(p));
  if (!onnxPath) throw new EngineError('model_load_failed', `model file is missing: ${join(dir, 'onnx', 'model.onnx')}`);

  const eos = config.eos_token_id;
  return {
    dir,
    onnxPath,
    stepGraphs: findStepGraphs(dir),
    tokenizerJson,
    tokenizerConfig,
    numLayers: config.num_hidden_layers,
    numHeads: config.num_attention_heads,
    numExperts: (config.num_local_experts ?? 0) + (config.num_zero_experts ?? 0),
    ropeTheta: config.rope_theta ?? 10000,
    numKvHeads: config.num_key_value_heads ?? config.num_attention_heads,
    headDim: config.head_dim ?? config.hidden_size / config.num_attention_heads,
    vocabSize: config.vocab_size,
    maxContextTokens: config.max_position_embeddings,
    eosTokenIds: eos === undefined ? [] : Array.isArray(eos) ? eos : [eos],
    config,
  };
}

/** Step graph file names the engine looks for, most preferred first. */
export const stepGraphNames = ['model.step.q8.onnx', 'model.step.onnx', 'model.step.q4.onnx'] as const;

/** Finds the step graph files present in onnx/, by name, in order of preference. */
function findStepGraphs(dir: string): Map<string, string> {
  const graphs = new Map<string, string>();
  for (const name of stepGraphNames) {
    const stepPath = join(dir, 'onnx', name);
    if (existsSync(stepPath)) graphs.set(name, stepPath);
  }
  return graphs;
}

/**
 * Checks that a step graph was made from this folder's model.onnx: each records the sha256 of
 * the model.onnx it came from (`sanfang.weights_sha256`), and model.step.onnx even reads its
 * weights from that file by byte offset. A graph that reads weights from another file of the
 * folder (`sanfang.data_file`, as the 8-bit graph does) records that file's sha256 too.
 */
export function checkStepGraph(model: ModelFiles, stepPath: string): void {
  let graph: Buffer;
  let actual: string;
  try {
    graph = readFileSync(stepPath);
    actual = fileSha256(model.onnxPath);
  } catch (cause) {
    throw new EngineError('model_load_failed', `cannot read ${stepPath} or ${model.onnxPath}: ${(cause as Error).message}`, { cause });
  }
  const recorded = metadataValue(graph, 'sanfang.weights_sha256');
  if (!recorded) throw new EngineError('model_load_failed', `${stepPath} has no sanfang.weights_sha256 metadata`);
  if (actual !== recorded) {
    throw new EngineError('model_load_failed', `${stepPath} was exported from other weights than ${model.onnxPath} (sha256 ${recorded.slice(0, 12)}… vs ${actual.slice(0, 12)}…); re-export it or delete it`);
  }

  const dataFile = metadataValue(graph, 'sanfang.data_file');
  if (dataFile === undefined) return;
  if (dataFile !== basename(dataFile)) throw new EngineError('model_load_failed', `${stepPath} names a data file outside its folder (${dataFile}); quantize the graph again`);
  const dataPath = join(dirname(stepPath), dataFile);
  if (!existsSync(dataPath)) throw new EngineError('model_load_failed', `model file is missing: ${dataPath}, which ${stepPath} reads its weights from`);
  const recordedData = metadataValue(graph, 'sanfang.data_sha256');
  let actualData: string;
  try {
    actualData = fileSha256(dataPath);
  } catch (cause) {
    throw new EngineError('model_load_failed', `cannot read ${dataPath}, which ${stepPath} reads its weights from: ${(cause as Error).message}`, { cause });
  }
  if (recordedData !== actualData) {
    throw new EngineError(
      'model_load_failed',
      `${dataPath} is not the file ${stepPath} was written against (sha256 ${actualData.slice(0, 12)}…, expected ${recordedData?.slice(0, 12) ?? 'none recorded'}); restore it or quantize the graph again`,
    );
  }
}

/**
 * Returns the value of an ONNX metadata entry found in the serialised graph, or undefined.
 * An entry is a StringStringEntryProto: field 1 (tag 0x0a) is the key and field 2 (tag
 * 0x12) the value, each with a one-byte length for the short strings used here.
 */
function metadataValue(graph: Buffer, key: string): string | undefined {
  const keyBytes = Buffer.from([0x0a, key.length, ...Buffer.from(key, 'latin1')]);
  const at = graph.indexOf(keyBytes);
  const valueAt = at + keyBytes.length;
  if (at === -1 || graph[valueAt] !== 0x12 || graph[valueAt + 1]! >= 0x80) return undefined;
  return graph.subarray(valueAt + 2, valueAt + 2 + graph[valueAt + 1]!).toString('utf8');
}

const digests = new Map<string, { key: string; digest: string }>();

/**
 * Returns a file's sha256, reusing the last digest while its size, modification time and change
 * time stay the same. Writing a file updates its change time, which `touch` cannot set back.
 */
function fileSha256(path: string): string {
  const stats = statSync(path);
  const key = `${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`;
  const known = digests.get(path);
  if (known?.key === key) return known.digest;
  const digest = createHash('sha256').update(readFileSync(path)).digest('hex');
  digests.set(path, { key, digest });
  return digest;
}
