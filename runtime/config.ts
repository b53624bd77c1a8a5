/** Runtime configuration: every default in one place, validated at start-up. */
import { z } from 'zod';
import type { EngineOptions } from '../engine/engine.ts';
import { toolLimitsSchema } from '../tools/limits.ts';

export const configSchema = z.object({
  host: z.string().default('127.0.0.1'),
  port: z.coerce.number().int().min(0).max(65535).default(3000),
  dbPath: z.string().default('data/sanfang.db'),
  modelDir: z.string().default('models/sanfang-moe-v0'),
  /** `onnx` runs the model folder in-process; `remote` sends every turn to an OpenAI-compatible server. */
  engineBackend: z.enum(['onnx', 'remote']).default('onnx'),
  /** Base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang). */
  remoteBaseUrl: z.string().url().optional(),
  remoteModel: z.string().default('sanfang'),
  remoteApiKey: z.string().optional(),
  remoteApi: z.enum(['completions', 'chat']).default('completions'),
  executionProvider: z.enum(['cpu', 'cuda']).default('cpu'),
  /** Threads onnxruntime uses inside one operator. */
  engineThreads: z.coerce.number().int().min(1).max(64).default(1),
  engineMaxBatchSize: z.coerce.number().int().min(1).max(256).default(16),
  engineMaxQueuedRequests: z.coerce.number().int().min(1).default(256),
  /** KV cache all in-flight requests may reserve, in MiB. */
  engineKvBudgetMb: z.coerce.number().int().min(1).default(2048),
  /**
   * Maximum prompt plus completion tokens; past the model's trained positions, attention is
   * sparse. An agent turn (up to 8 transcript lines plus a 160-token turn) needs several hundred.
   */
  engineMaxContextTokens: z.coerce.number().int().min(1024).max(1_048_576).default(32_768),
  /** Most prompt tokens prefilled between two decode steps. */
  enginePrefillChunkTokens: z.coerce.number().int().min(16).max(4096).default(256),
  /** Sparse attention past the trained positions: sink tokens, recent window and chosen-page tokens. */
  engineSinkTokens: z.coerce.number().int().min(0).multipleOf(32).default(64),
  engineWindowTokens: z.coerce.number().int().min(32).default(448),
  engineSelectedTokens: z.coerce.number().int().min(0).multipleOf(32).default(256),
  /** One model call of an agent; past this the turn falls back to the strategy library. */
  turnTimeoutMs: z.coerce.number().int().positive().default(15_000),
  /** How long the case waits for a human rider's reply before using the platform's ETA. */
  riderReplyTimeoutMs: z.coerce.number().int().positive().default(90_000),
  /** An order expected later than its promised time by more than this earns a coupon. */
  lateThresholdMin: z.coerce.number().nonnegative().default(10),
  /** Coupon value for a late order, in yuan; capped by the per-case limit. */
  lateCouponYuan: z.coerce.number().positive().default(5),
  limits: toolLimitsSchema.default({ maxCompensationYuanPerCase: 10 }),
  /** Longest accepted WebSocket frame, in bytes. */
  maxFrameBytes: z.coerce.number().int().positive().default(16 * 1024),
  /** Chat messages one connection may send per second on average, with bursts up to `messageBurst`. */
  messagesPerSecond: z.coerce.number().positive().default(2),
  messageBurst: z.coerce.number().int().positive().default(10),
  /** Longest accepted chat message, in characters. */
  maxMessageChars: z.coerce.number().int().positive().default(500),
});

export type Config = z.infer<typeof configSchema>;

const environmentKeys: Record<string, keyof Config> = {
  SANFANG_HOST: 'host',
  PORT: 'port',
  SANFANG_PORT: 'port',
  SANFANG_DB: 'dbPath',
  SANFANG_MODEL_DIR: 'modelDir',
  SANFANG_EXECUTION_PROVIDER: 'executionProvider',
  SANFANG_ENGINE_BACKEND: 'engineBackend',
  SANFANG_REMOTE_BASE_URL: 'remoteBaseUrl',
  SANFANG_REMOTE_MODEL: 'remoteModel',
  SANFANG_REMOTE_API_KEY: 'remoteApiKey',
  SANFANG_REMOTE_API: 'remoteApi',
  SANFANG_ENGINE_THREADS: 'engineThreads',
  SANFANG_ENGINE_MAX_BATCH_SIZE: 'engineMaxBatchSize',
  SANFANG_ENGINE_MAX_QUEUED_REQUESTS: 'engineMaxQueuedRequests',
  SANFANG_ENGINE_KV_BUDGET_MB: 'engineKvBudgetMb',
  SANFANG_ENGINE_MAX_CONTEXT_TOKENS: 'engineMaxContextTokens',
  SANFANG_ENGINE_PREFILL_CHUNK_TOKENS: 'enginePrefillChunkTokens',
  SANFANG_ENGINE_SINK_TOKENS: 'engineSinkTokens',
  SANFANG_ENGINE_WINDOW_TOKENS: 'engineWindowTokens',
  SANFANG_ENGINE_SELECTED_TOKENS: 'engineSelectedTokens',
  SANFANG_TURN_TIMEOUT_MS: 'turnTimeoutMs',
  SANFANG_RIDER_REPLY_TIMEOUT_MS: 'riderReplyTimeoutMs',
  SANFANG_LATE_THRESHOLD_MIN: 'lateThresholdMin',
  SANFANG_LATE_COUPON_YUAN: 'lateCouponYuan',
};

/** Builds the configuration from environment variables over the defaults, then `overrides`. */
export function loadConfig(environment: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const values: Record<string, unknown> = {};
  for (const [variable, key] of Object.entries(environmentKeys)) {
    if (environment[variable] !== undefined && environment[variable] !== '') values[key] = environment[variable];
  }
  const parsed = configSchema
    .refine((config) => config.engineBackend !== 'remote' || config.remoteBaseUrl !== undefined, {
      path: ['remoteBaseUrl'],
      message: 'SANFANG_REMOTE_BASE_URL is required when SANFANG_ENGINE_BACKEND is remote',
    })
    .safeParse({ ...values, ...overrides });
  if (!parsed.success) {
    // Name the environment variable that sets each key, which is what an operator can change.
    const variableOf = (key: PropertyKey) => Object.entries(environmentKeys).find(([variable, name]) => name === key && variable !== 'PORT')?.[0];
    const detail = parsed.error.issues.map((i) => `${variableOf(i.path[0] ?? '') ?? i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid configuration: ${detail}`);
  }
  return parsed.data;
}

/** Returns the message for an engine that failed to load, pointing at the variables that set its options. */
export function engineLoadFailure(error: Error): string {
  return `the engine failed to load: ${error.message}; the engine options come from the SANFANG_ENGINE_* variables (see README.md)`;
}

/** Builds the local engine's options from the configuration, for the server and the simulator. */
export function engineOptions(config: Config): EngineOptions {
  return {
    modelDir: config.modelDir,
    executionProvider: config.executionProvider,
    intraOpThreads: config.engineThreads,
    maxBatchSize: config.engineMaxBatchSize,
    maxQueuedRequests: config.engineMaxQueuedRequests,
    kvBudgetBytes: config.engineKvBudgetMb * 1024 * 1024,
    maxContextTokens: config.engineMaxContextTokens,
    prefillChunkTokens: config.enginePrefillChunkTokens,
    sparseAttention: { sinkTokens: config.engineSinkTokens, windowTokens: config.engineWindowTokens, selectedTokens: config.engineSelectedTokens },
  };
}
