/**
 * Reads and checks a model folder in the standard layout: config.json, tokenizer.json,
 * tokenizer_config.json (optional) and onnx/model.onnx (or onnx/decoder_model_merged.onnx).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
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
});

export interface ModelFiles {
  dir: string;
  onnxPath: string;
  tokenizerJson: object;
  tokenizerConfig: Record<string, unknown>;
  numLayers: number;
  numKvHeads: number;
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
    tokenizerJson,
    tokenizerConfig,
    numLayers: config.num_hidden_layers,
    numKvHeads: config.num_key_value_heads ?? config.num_attention_heads,
    headDim: config.head_dim ?? config.hidden_size / config.num_attention_heads,
    vocabSize: config.vocab_size,
    maxContextTokens: config.max_position_embeddings,
    eosTokenIds: eos === undefined ? [] : Array.isArray(eos) ? eos : [eos],
    config,
  };
}
