/**
 * The shared inference engine: one per process, with continuous batching. Between decode
 * steps, requests join the running batch once their prompt is prefilled and leave it as soon
 * as they finish, abort or pass their deadline. Prompts are prefilled in chunks of at most
 * `prefillChunkTokens`, one prefill call between two decode steps, so a long prompt delays the
 * running requests by one chunk at a time. Short prompts queued together share a left-padded
 * prefill call.
 *
 * Each sequence keeps its KV cache in pages (kv-cache.ts) and the decode batch reads views of
 * them into slot buffers (decode-batch.ts). Contexts longer than the model's trained positions
 * attend sparsely (sparse.ts), so a step's cost is bounded by the attended budget rather than
 * the context length. Every sequence's cache counts against a byte budget.
 */
import { z } from 'zod';
import { jsonSchemaConstraint, tokenVocabulary, type ConstraintFactory, type TokenConstraint, type TokenVocabulary } from './constrained/index.ts';
import { DecodeBatch, headroom, slotBufferBytes, slotsFor, type BatchRow } from './decode-batch.ts';
import { EngineError, EngineOverloaded } from './errors.ts';
import { bytesPerToken, pageTokens, SequenceCache, viewLength, type LayerView } from './kv-cache.ts';
import { readModelDir, type ModelFiles } from './model-dir.ts';
import type { ModelShape } from './rotary.ts';
import { createRandom, sampleToken, samplingSchema, type Sampling } from './sampler.ts';
import { attendedBudget, chooseViews, defaultSparseAttention, isDense, type SparseAttentionOptions } from './sparse.ts';
import { loadStepModel, maskedBias, type ExecutionProvider, type StepModel, type StepResult } from './step-model.ts';
import { StreamDecoder, TextTokenizer } from './tokenizer.ts';

export type { ConstraintFactory, TokenConstraint } from './constrained/index.ts';

export const generateRequestSchema = z.object({
  prompt: z.string().min(1),
  maxNewTokens: z.number().int().min(1).max(4096).default(128),
  sampling: samplingSchema.default({ temperature: 0, topP: 1 }),
  stop: z.array(z.string().min(1)).max(8).default([]),
  priority: z.enum(['live', 'simulation']).default('live'),
  /** Milliseconds from submission after which the request fails with `deadline_exceeded`. */
  deadlineMs: z.number().int().positive().max(3_600_000).optional(),
});

export type GenerateRequest = z.input<typeof generateRequestSchema> & {
  signal?: AbortSignal;
  /** Called with each newly decoded piece of text, in order. */
  onText?: (delta: string) => void;
  /** Masks the sampler so the output follows a grammar, e.g. one built from a zod schema. */
  constraint?: ConstraintFactory;
  /**
   * Constrains the output to compact JSON that this zod schema accepts, followed by the end
   * token. The engine builds the grammar once per schema object.
   */
  responseSchema?: z.ZodType;
};

export type FinishReason = 'stop' | 'length';

export interface GenerateResult {
  text: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: FinishReason;
  queueMs: number;
  firstTokenMs: number;
  totalMs: number;
}

/** The interface the agents depend on; tests of other parts may pass a fake. */
export interface TextGenerator {
  generate(request: GenerateRequest): Promise<GenerateResult>;
}

/** Callbacks for metrics; each is called on the engine loop, so keep them cheap. */
export interface EngineObserver {
  queueWait?(ms: number): void;
  firstToken?(ms: number): void;
  interToken?(ms: number): void;
  step?(kind: 'prefill' | 'decode', rows: number, tokens: number, ms: number): void;
}

export interface EngineOptions {
  modelDir: string;
  maxBatchSize?: number;
  maxQueuedRequests?: number;
  executionProvider?: ExecutionProvider;
  intraOpThreads?: number;
  /**
   * The graph file under onnx/ to run, or 'auto' (default): the 8-bit step graph when present,
   * then the fp32 step graph, then the standard model.onnx.
   */
  graph?: string;
  /** Maximum prompt plus completion tokens; past the trained positions, attention is sparse. */
  maxContextTokens?: number;
  /** Most prompt tokens prefilled between two decode steps. */
  prefillChunkTokens?: number;
  /** Bytes of KV cache all sequences together may reserve. */
  kvBudgetBytes?: number;
  sparseAttention?: Partial<SparseAttentionOptions>;
  /**
   * Whether the end token finishes a request (default true). Benchmarks turn this off so every
   * request decodes exactly maxNewTokens tokens.
   */
  stopAtEndToken?: boolean;
  observer?: EngineObserver;
}

export interface SequenceStats {
  id: number;
  phase: 'prefill' | 'decode';
  contextTokens: number;
  kvBytes: number;
  /** Tokens each step attends to (all of them while the context is dense). */
  attendedTokens: number;
}

export interface EngineStats {
  queued: number;
  running: number;
  completed: number;
  aborted: number;
  rejected: number;
  deadlineExceeded: number;
  decodeSteps: number;
  prefillCalls: number;
  generatedTokens: number;
  batchLayouts: number;
  /** Bytes held by sequences' KV pages. */
  kvBytes: number;
  /** Bytes reserved by admitted sequences for their whole prompt plus completion. */
  kvReservedBytes: number;
  kvBudgetBytes: number;
  /** Bytes of the decode batch's slot buffers. */
  batchBufferBytes: number;
  /** Bytes of the budget set aside for the slot buffers at their largest. Sequences share the rest. */
  batchBufferReserveBytes: number;
  /** Routed (token, choice) assignments per layer and expert, since load; empty without expert counts. */
  expertLoad: number[][];
}

interface Sequence extends BatchRow {
  id: number;
  promptIds: number[];
  generated: number[];
  maxNewTokens: number;
  sampling: Required<Pick<Sampling, 'temperature' | 'topP'>>;
  stop: string[];
  priority: 'live' | 'simulation';
  random: () => number;
  decoder: StreamDecoder;
  constraint?: TokenConstraint;
  /** Tokens that close a constrained value at the token limit, emitted in place of sampling. */
  forced?: number[];
  /** Final text, as streamed through onText. */
  text: string;
  /** Decoded text not streamed yet because it may be the start of a stop string. */
  pending: string;
  cache: SequenceCache;
  reservedBytes: number;
  /** The latest post-RoPE query per layer, for choosing sparse pages. */
  queries?: Float32Array[];
  /** Dense views cover positions up to this length; past it the views must be chosen again. */
  denseUntil: number;
  /** The last sparse choice and the cache length it was made at. */
  sparseViews?: LayerView[];
  viewsChosenAt: number;
  enqueuedAt: number;
  startedAt: number;
  firstTokenAt: number;
  lastTokenAt: number;
  settled: boolean;
  onText?: (delta: string) => void;
  resolve: (result: GenerateResult) => void;
  reject: (error: Error) => void;
  cleanup: () => void;
}

/** Engine options with their defaults filled in. */
interface Settings {
  maxBatchSize: number;
  maxQueuedRequests: number;
  chunkTokens: number;
  sparse: SparseAttentionOptions;
  maxContextTokens: number;
  kvBudgetBytes: number;
  batchBufferReserveBytes: number;
}

/** Upper bound on padded tokens (rows × longest prompt) of one grouped prefill call. */
const maxGroupTokens = 2048;

/** Largest share of padding a grouped prefill may add to the real prompt tokens. */
const maxPrefillPadding = 0.25;

export class Engine implements TextGenerator {
  readonly maxContextTokens: number;
  readonly shape: ModelShape;
  private readonly maxBatchSize: number;
  private readonly maxQueuedRequests: number;
  private readonly chunkTokens: number;
  private readonly kvBudgetBytes: number;
  private readonly batchBufferReserveBytes: number;
  /** The budget left for sequences' KV pages once the slot buffers are set aside. */
  private readonly sequenceBudgetBytes: number;
  private readonly sparse: SparseAttentionOptions;
  private readonly observer: EngineObserver;
  private readonly queue: Sequence[] = [];
  /** Admitted sequences whose prompt is not fully prefilled yet, in admission order. */
  private prefilling: Sequence[] = [];
  private readonly batch: DecodeBatch<Sequence>;
  private reservedBytes = 0;
  /** Whether the last prefill call took a group of short prompts, so that long chunks take turns. */
  private lastPrefillWasGroup = false;
  private loop: Promise<void> | null = null;
  private closed = false;
  private closing: Promise<void> | undefined;
  private nextId = 1;
  /** The model's end tokens; `endIds` is empty when the end token does not stop requests. */
  private readonly endTokenIds: number[];
  private readonly endIds: Set<number>;
  private readonly expertLoad: Float64Array;
  private vocabulary: TokenVocabulary | undefined;
  private readonly schemaConstraints = new WeakMap<z.ZodType, ConstraintFactory>();
  private readonly counters = {
    completed: 0,
    aborted: 0,
    rejected: 0,
    deadlineExceeded: 0,
    decodeSteps: 0,
    prefillCalls: 0,
    generatedTokens: 0,
  };

  private constructor(
    readonly model: ModelFiles,
    readonly tokenizer: TextTokenizer,
    private readonly backend: StepModel,
    settings: Settings,
    options: EngineOptions,
  ) {
    this.shape = { numLayers: model.numLayers, numHeads: model.numHeads, numKvHeads: model.numKvHeads, headDim: model.headDim, ropeTheta: model.ropeTheta };
    this.maxBatchSize = settings.maxBatchSize;
    this.maxQueuedRequests = settings.maxQueuedRequests;
    this.chunkTokens = settings.chunkTokens;
    this.sparse = settings.sparse;
    this.maxContextTokens = settings.maxContextTokens;
    this.kvBudgetBytes = settings.kvBudgetBytes;
    this.batchBufferReserveBytes = settings.batchBufferReserveBytes;
    this.sequenceBudgetBytes = settings.kvBudgetBytes - settings.batchBufferReserveBytes;
    this.observer = options.observer ?? {};
    this.batch = new DecodeBatch<Sequence>(this.shape, this.maxBatchSize);
    this.expertLoad = new Float64Array(model.numLayers * backend.numExperts);
    const endToken = tokenizer.tokenId('<|end|>');
    this.endTokenIds = [...new Set([...model.eosTokenIds, ...(endToken === undefined ? [] : [endToken])])];
    this.endIds = new Set(options.stopAtEndToken === false ? [] : this.endTokenIds);
  }

  /** The graph file in use. */
  get graphPath(): string {
    return this.backend.path;
  }

  static async load(options: EngineOptions): Promise<Engine> {
    const model = readModelDir(options.modelDir);
    const tokenizer = new TextTokenizer(model);
    const settings = Engine.settings(options, model);
    const backend = await loadStepModel(model, {
      executionProvider: options.executionProvider ?? 'cpu',
      intraOpThreads: options.intraOpThreads ?? 1,
      graph: options.graph ?? 'auto',
    });
    return new Engine(model, tokenizer, backend, settings, options);
  }

  /** Fills in the defaults of `options` and checks them; throws invalid_request listing every problem. */
  private static settings(options: EngineOptions, model: ModelFiles): Settings {
    const settings: Settings = {
      maxBatchSize: options.maxBatchSize ?? 16,
      maxQueuedRequests: options.maxQueuedRequests ?? 256,
      chunkTokens: options.prefillChunkTokens ?? 256,
      sparse: { ...defaultSparseAttention, ...options.sparseAttention },
      maxContextTokens: options.maxContextTokens ?? 32_768,
      kvBudgetBytes: options.kvBudgetBytes ?? 2 * 1024 ** 3,
      batchBufferReserveBytes: 0,
    };
    const { sparse, chunkTokens: chunk } = settings;
    const problems: string[] = [];
    const isCount = (value: unknown, min: number, max = 1_000_000) => Number.isInteger(value) && (value as number) >= min && (value as number) <= max;
    if (!isCount(sparse.sinkTokens, 0) || !isCount(sparse.selectedTokens, 0) || sparse.sinkTokens % pageTokens !== 0 || sparse.selectedTokens % pageTokens !== 0) {
      problems.push(`sinkTokens and selectedTokens must be non-negative multiples of ${pageTokens}`);
    }
    if (!isCount(sparse.windowTokens, pageTokens)) problems.push(`windowTokens must be an integer of at least ${pageTokens}`);
    if (!isCount(settings.maxBatchSize, 1, 1024)) problems.push('maxBatchSize must be an integer from 1 to 1024');
    if (!isCount(settings.maxQueuedRequests, 0)) problems.push('maxQueuedRequests must be a non-negative integer');
    if (!Number.isInteger(chunk) || chunk < 1) problems.push('prefillChunkTokens must be a positive integer');
    const room = Math.max(chunk, headroom * 2);
    if (attendedBudget(sparse) + room > model.maxContextTokens) {
      problems.push(
        `the attended budget ${attendedBudget(sparse)} plus ${room} new tokens (the larger of prefillChunkTokens ${chunk} and ${headroom * 2} decode tokens) ` +
          `exceeds the model's ${model.maxContextTokens} trained positions`,
      );
    }
    if (!(settings.kvBudgetBytes > 0)) problems.push('kvBudgetBytes must be positive');
    if (!isCount(settings.maxContextTokens, 1, Number.MAX_SAFE_INTEGER)) problems.push('maxContextTokens must be a positive integer');
    if (problems.length > 0) throw new EngineError('invalid_request', `invalid engine options: ${problems.join('; ')}`);

    // The slot buffers hold maxBatchSize rows of the longest view plus room to grow. A dense
    // view stops `headroom` tokens short of the trained positions, and a reused sparse view
    // grows by up to `headroom` tokens past the attended budget.
    const longestView = Math.min(settings.maxContextTokens, Math.max(model.maxContextTokens - headroom, attendedBudget(sparse) + headroom));
    const slots = slotsFor(longestView);
    settings.batchBufferReserveBytes = slotBufferBytes(model, settings.maxBatchSize, slots);
    if (settings.kvBudgetBytes <= settings.batchBufferReserveBytes) {
      throw new EngineError(
        'invalid_request',
        `invalid engine options: kvBudgetBytes ${settings.kvBudgetBytes} leaves nothing for sequences after the decode batch's slot buffers of ` +
          `${settings.batchBufferReserveBytes} bytes (maxBatchSize ${settings.maxBatchSize} rows of up to ${slots} tokens); ` +
          `raise kvBudgetBytes to at least ${Math.floor(settings.batchBufferReserveBytes / 1024 ** 2) + 1} MiB or lower maxBatchSize`,
      );
    }
    return settings;
  }

  stats(): EngineStats {
    const inFlight = [...this.prefilling, ...this.batch.rows].filter((s) => !s.settled);
    const experts = this.backend.numExperts;
    return {
      queued: this.queue.filter((s) => !s.settled).length,
      running: inFlight.length,
      ...this.counters,
      batchLayouts: this.batch.layouts,
      kvBytes: inFlight.reduce((sum, s) => sum + s.cache.bytes, 0),
      kvReservedBytes: this.reservedBytes,
      kvBudgetBytes: this.kvBudgetBytes,
      batchBufferBytes: this.batch.bytes,
      batchBufferReserveBytes: this.batchBufferReserveBytes,
      expertLoad: Array.from({ length: experts === 0 ? 0 : this.model.numLayers }, (_, layer) => Array.from(this.expertLoad.subarray(layer * experts, (layer + 1) * experts))),
    };
  }

  /** Per running sequence: context length, KV bytes held and tokens attended per step. */
  sequences(): SequenceStats[] {
    const rows = [...this.prefilling.map((s) => ['prefill', s] as const), ...this.batch.rows.map((s) => ['decode', s] as const)];
    return rows
      .filter(([, s]) => !s.settled)
      .map(([phase, s]) => ({
        id: s.id,
        phase,
        contextTokens: s.cache.length,
        kvBytes: s.cache.bytes,
        attendedTokens: s.sparseViews ? viewLength(s.sparseViews[0]!) + s.cache.length - s.viewsChosenAt : s.cache.length,
      }));
  }

  generate(request: GenerateRequest): Promise<GenerateResult> {
    if (this.closed) return Promise.reject(new EngineError('closed', 'engine is closed'));
    const parsed = generateRequestSchema.safeParse(request);
    if (!parsed.success) {
      const detail = parsed.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; ');
      return Promise.reject(new EngineError('invalid_request', `invalid generate request: ${detail}`));
    }
    const options = parsed.data;
    if (request.signal?.aborted) {
      this.counters.aborted++;
      return Promise.reject(new EngineError('aborted', 'request was aborted before it started'));
    }
    if ((request.constraint || request.responseSchema) && options.stop.length > 0) {
      return Promise.reject(new EngineError('invalid_request', 'invalid generate request: stop strings would cut constrained output; pass a constraint or stop strings, not both'));
    }
    // A prompt whose bytes cannot fit even at the longest token's length is rejected before encoding.
    const minimumTokens = Buffer.byteLength(options.prompt) / this.tokenizer.maxTokenBytes;
    if (minimumTokens + options.maxNewTokens > this.maxContextTokens) {
      this.counters.rejected++;
      return Promise.reject(new EngineError('context_overflow', `prompt of at least ${Math.ceil(minimumTokens)} tokens plus maxNewTokens ${options.maxNewTokens} exceeds the engine context of ${this.maxContextTokens} tokens; shorten the prompt`));
    }

    let constraint: TokenConstraint | undefined;
    try {
      constraint = (request.constraint ?? (request.responseSchema ? this.schemaConstraint(request.responseSchema) : undefined))?.create();
    } catch (cause) {
      return Promise.reject(new EngineError('invalid_request', `cannot constrain the output: ${(cause as Error).message}`, { cause }));
    }

    // A constrained output is closed early when it nears maxNewTokens, which needs room for the
    // schema's shortest value.
    const shortest = constraint?.completion();
    if (shortest !== undefined && shortest.length > options.maxNewTokens) {
      return Promise.reject(
        new EngineError('invalid_request', `maxNewTokens ${options.maxNewTokens} is below the ${shortest.length} tokens of the response schema's shortest value; raise maxNewTokens`),
      );
    }

    const promptIds = this.tokenizer.encode(options.prompt);
    const tokens = promptIds.length + options.maxNewTokens;
    if (tokens > this.maxContextTokens) {
      this.counters.rejected++;
      return Promise.reject(
        new EngineError(
          'context_overflow',
          `prompt of ${promptIds.length} tokens plus maxNewTokens ${options.maxNewTokens} exceeds the engine context of ${this.maxContextTokens} tokens; shorten the prompt`,
        ),
      );
    }
    const reservedBytes = Math.ceil(tokens / pageTokens) * pageTokens * bytesPerToken(this.shape);
    if (reservedBytes > this.sequenceBudgetBytes) {
      this.counters.rejected++;
      return Promise.reject(
        new EngineError(
          'kv_budget_exceeded',
          `a request of ${tokens} tokens needs ${reservedBytes} bytes of KV cache, more than the ${this.sequenceBudgetBytes} bytes that the engine budget of ` +
            `${this.kvBudgetBytes} bytes leaves after the decode batch's slot buffers; shorten the request or raise the budget`,
        ),
      );
    }
    if (this.queue.length >= this.maxQueuedRequests) {
      this.counters.rejected++;
      return Promise.reject(new EngineOverloaded(this.queue.length, this.maxQueuedRequests));
    }

    return new Promise<GenerateResult>((resolve, reject) => {
      const sequence: Sequence = {
        id: this.nextId++,
        promptIds,
        generated: [],
        maxNewTokens: options.maxNewTokens,
        sampling: { temperature: options.sampling.temperature, topP: options.sampling.topP },
        stop: options.stop,
        priority: options.priority,
        random: createRandom(options.sampling.seed ?? this.nextId),
        decoder: new StreamDecoder(this.tokenizer),
        constraint,
        text: '',
        pending: '',
        cache: new SequenceCache(this.shape),
        reservedBytes: 0,
        denseUntil: 0,
        enqueuedAt: performance.now(),
        startedAt: 0,
        firstTokenAt: 0,
        lastTokenAt: 0,
        settled: false,
        onText: request.onText,
        resolve,
        reject,
        cleanup: () => {},
        viewsChosenAt: 0,
        views: (lookahead) => this.viewsOf(sequence, lookahead, true),
        viewsExpired: () =>
          sequence.sparseViews === undefined ? sequence.cache.length + 1 > sequence.denseUntil : sequence.cache.length - sequence.viewsChosenAt >= headroom,
      };
      const cleanups: (() => void)[] = [];
      if (request.signal) {
        const signal = request.signal;
        const onAbort = () => this.abort(sequence, new EngineError('aborted', 'request was aborted'));
        signal.addEventListener('abort', onAbort, { once: true });
        cleanups.push(() => signal.removeEventListener('abort', onAbort));
      }
      if (options.deadlineMs !== undefined) {
        const timer = setTimeout(() => {
          this.counters.deadlineExceeded++;
          this.abort(sequence, new EngineError('deadline_exceeded', `request did not finish within its deadline of ${options.deadlineMs} ms`));
        }, options.deadlineMs);
        cleanups.push(() => clearTimeout(timer));
      }
      sequence.cleanup = () => cleanups.forEach((cleanup) => cleanup());
      sequence.reservedBytes = reservedBytes;
      this.enqueue(sequence);
      this.loop ??= this.runLoop().finally(() => (this.loop = null));
    });
  }

  async close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    for (const sequence of [...this.queue, ...this.prefilling, ...this.batch.rows]) this.abort(sequence, new EngineError('aborted', 'engine is closing'));
    await this.loop;
    await this.backend.close();
  }

  private schemaConstraint(schema: z.ZodType): ConstraintFactory {
    let factory = this.schemaConstraints.get(schema);
    if (!factory) {
      const vocabulary = (this.vocabulary ??= tokenVocabulary(this.tokenizer));
      factory = jsonSchemaConstraint(schema, vocabulary, { endTokenIds: this.endTokenIds.filter((id) => vocabulary.tokenBytes[id] === undefined) });
      this.schemaConstraints.set(schema, factory);
    }
    return factory;
  }

  /**
   * Chooses the views a sequence attends to for the next `lookahead` tokens. In decode (`reuse`),
   * a sparse choice is kept, with its window grown to the cache, until the sequence has taken
   * `headroom` new tokens. So its attention depends on its own history only, not on when other
   * rows force a layout.
   */
  private viewsOf(sequence: Sequence, lookahead: number, reuse = false): LayerView[] {
    const length = sequence.cache.length;
    const maxPositions = this.model.maxContextTokens;
    const dense = isDense(length, lookahead, maxPositions);
    if (!dense && reuse && sequence.sparseViews && length - sequence.viewsChosenAt < headroom) {
      return sequence.sparseViews.map((view) => view.map((segment, i) => (i === view.length - 1 ? { ...segment, end: length } : segment)));
    }
    const views = chooseViews({
      cache: sequence.cache,
      numLayers: this.shape.numLayers,
      numHeads: this.shape.numHeads,
      maxPositions,
      lookahead,
      options: this.sparse,
      queries: sequence.queries,
    });
    sequence.denseUntil = dense ? maxPositions : Infinity;
    sequence.sparseViews = dense ? undefined : views;
    sequence.viewsChosenAt = length;
    return views;
  }

  private enqueue(sequence: Sequence): void {
    // Live chat goes ahead of every queued simulation request, behind earlier live ones.
    const index = sequence.priority === 'live' ? this.queue.findIndex((s) => s.priority === 'simulation') : -1;
    if (index === -1) this.queue.push(sequence);
    else this.queue.splice(index, 0, sequence);
  }

  private abort(sequence: Sequence, error: EngineError): void {
    if (sequence.settled) return;
    // A queued request leaves the queue at once, so aborted work never counts against its bound.
    const queued = this.queue.indexOf(sequence);
    if (queued !== -1) this.queue.splice(queued, 1);
    if (error.code === 'aborted') this.counters.aborted++;
    this.settle(sequence, error);
  }

  private settle(sequence: Sequence, outcome: GenerateResult | Error): void {
    if (sequence.settled) return;
    sequence.settled = true;
    // An admitted sequence's reservation ends with it; its rows leave at the next step boundary.
    if (sequence.startedAt !== 0) this.reservedBytes -= sequence.reservedBytes;
    sequence.cleanup();
    if (outcome instanceof Error) sequence.reject(outcome);
    else sequence.resolve(outcome);
  }

  /** Drops settled sequences from the prefill list and the batch. */
  private release(): void {
    this.prefilling = this.prefilling.filter((s) => !s.settled);
    for (const sequence of this.batch.rows.filter((s) => s.settled)) this.batch.leave(sequence);
  }

  /** Moves queued requests into prefill while the batch has room and the KV budget allows. */
  private admit(): void {
    while (this.queue.length > 0 && this.prefilling.length + this.batch.size < this.maxBatchSize) {
      const next = this.queue[0]!;
      if (this.reservedBytes + next.reservedBytes > this.sequenceBudgetBytes) break;
      this.queue.shift();
      this.reservedBytes += next.reservedBytes;
      next.startedAt = performance.now();
      this.observer.queueWait?.(next.startedAt - next.enqueuedAt);
      this.prefilling.push(next);
    }
  }

  private async runLoop(): Promise<void> {
    while (this.queue.length > 0 || this.prefilling.length > 0 || this.batch.size > 0) {
      this.release();
      this.admit();
      if (this.prefilling.length > 0) await this.prefillStep();
      this.release();
      if (this.batch.size > 0) {
        try {
          await this.decodeStep();
        } catch (error) {
          for (const sequence of this.batch.rows) this.settle(sequence, error as Error);
        }
      }
      // Let abort handlers, timers and new requests run between steps.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Runs one prefill call: a group of whole short prompts left-padded together, or the next
   * chunk of a long prompt. When both wait they take turns, and a live short prompt goes before
   * a simulation's long one. Live requests come first within each kind.
   */
  private async prefillStep(): Promise<void> {
    const rank = (s: Sequence) => (s.priority === 'live' ? 0 : 1);
    const byPriority = [...this.prefilling].sort((a, b) => rank(a) - rank(b));
    const isShort = (s: Sequence) => s.cache.length === 0 && s.promptIds.length <= this.chunkTokens;
    const short = byPriority.filter(isShort);
    const long = byPriority.find((s) => !isShort(s));
    const chunkTurn = long !== undefined && (short.length === 0 || (this.lastPrefillWasGroup && !(short[0]!.priority === 'live' && long.priority === 'simulation')));
    const group = chunkTurn ? [long] : this.shortGroup(short);
    this.lastPrefillWasGroup = !chunkTurn;
    try {
      if (chunkTurn) await this.prefillChunk(long);
      else await this.prefillGroup(group);
    } catch (error) {
      // The failed call's sequences fail; the others go on.
      for (const sequence of group) this.settle(sequence, error as Error);
    }
  }

  /** Whole short prompts, in the given order, that pad well together. */
  private shortGroup(candidates: Sequence[]): Sequence[] {
    const group: Sequence[] = [];
    let longest = 0;
    let promptTokens = 0;
    for (const next of candidates) {
      const length = next.promptIds.length;
      const padded = Math.max(longest, length) * (group.length + 1);
      const fits = padded <= maxGroupTokens && padded <= (promptTokens + length) * (1 + maxPrefillPadding);
      if (group.length > 0 && !fits) break;
      group.push(next);
      longest = Math.max(longest, length);
      promptTokens += length;
    }
    return group;
  }

  private async prefillGroup(group: Sequence[]): Promise<void> {
    const startedAt = performance.now();
    const { numLayers } = this.shape;
    const seq = Math.max(...group.map((s) => s.promptIds.length));
    const rows = group.length;
    const inputIds = new BigInt64Array(rows * seq);
    const positionIds = new BigInt64Array(rows * seq);
    const bias = new Float32Array(rows * seq * seq).fill(maskedBias);
    group.forEach((sequence, row) => {
      const pad = seq - sequence.promptIds.length;
      for (let j = 0; j < seq; j++) {
        const base = (row * seq + j) * seq;
        if (j < pad) {
          // A padding query attends only to itself, so its softmax stays finite.
          bias[base + j] = 0;
          continue;
        }
        inputIds[row * seq + j] = BigInt(sequence.promptIds[j - pad]!);
        positionIds[row * seq + j] = BigInt(j - pad);
        bias.fill(0, base + pad, base + j + 1);
      }
    });
    const empty = Array.from({ length: numLayers }, () => new Float32Array(0));
    const output = await this.backend.run({ batch: rows, seq, past: 0, inputIds, positionIds, bias, pastKeys: empty, pastValues: empty });
    this.counters.prefillCalls++;
    this.countExperts(output, rows * seq - group.reduce((sum, s) => sum + s.promptIds.length, 0));
    this.observer.step?.('prefill', rows, rows * seq, performance.now() - startedAt);
    group.forEach((sequence, row) => {
      const pad = seq - sequence.promptIds.length;
      sequence.cache.append(output.newKeys, output.newValues, row, seq, pad, sequence.promptIds.length);
      sequence.queries = this.rowQueries(output, row);
      this.finishPrefill(sequence, output, row);
    });
  }

  /** Prefills the next chunk of one prompt, attending to its cached view. */
  private async prefillChunk(sequence: Sequence): Promise<void> {
    const startedAt = performance.now();
    const { numLayers, numKvHeads, headDim } = this.shape;
    const start = sequence.cache.length;
    const seq = Math.min(this.chunkTokens, sequence.promptIds.length - start);
    const views = this.viewsOf(sequence, seq);
    const past = views[0]!.reduce((sum, segment) => sum + segment.end - segment.start, 0);
    const pastKeys = Array.from({ length: numLayers }, () => new Float32Array(numKvHeads * past * headDim));
    const pastValues = Array.from({ length: numLayers }, () => new Float32Array(numKvHeads * past * headDim));
    views.forEach((view, layer) => sequence.cache.copyView(layer, view, pastKeys[layer]!, pastValues[layer]!, 0, past, 0));

    const inputIds = BigInt64Array.from(sequence.promptIds.slice(start, start + seq), BigInt);
    const positionIds = BigInt64Array.from({ length: seq }, (_, j) => BigInt(start + j));
    const width = past + seq;
    const bias = new Float32Array(seq * width).fill(maskedBias);
    const dense = views[0]!.length <= 1 && (views[0]![0]?.start ?? 0) === 0;
    if (dense) {
      for (let j = 0; j < seq; j++) bias.fill(0, j * width, j * width + past + j + 1);
    } else {
      // A sparse view ends with the recent window. Each chunk query attends to the sinks, the
      // chosen pages and only the last windowTokens tokens before it, as a decode step does.
      const window = views[0]![views[0]!.length - 1]!;
      const windowSlot = past - (window.end - window.start);
      for (let j = 0; j < seq; j++) {
        const oldest = start + j - this.sparse.windowTokens;
        const row = j * width;
        bias.fill(0, row, row + windowSlot);
        bias.fill(0, row + windowSlot + Math.max(0, Math.min(past - windowSlot, oldest - window.start)), row + past);
        bias.fill(0, row + past + Math.max(0, oldest - start), row + past + j + 1);
      }
    }

    const output = await this.backend.run({ batch: 1, seq, past, inputIds, positionIds, bias, pastKeys, pastValues });
    this.counters.prefillCalls++;
    this.countExperts(output);
    this.observer.step?.('prefill', 1, seq, performance.now() - startedAt);
    sequence.cache.append(output.newKeys, output.newValues, 0, seq, 0, seq);
    sequence.queries = this.rowQueries(output, 0);
    if (sequence.cache.length === sequence.promptIds.length) this.finishPrefill(sequence, output, 0);
  }

  /** Samples a fully prefilled sequence's first token and moves it into the decode batch. */
  private finishPrefill(sequence: Sequence, output: StepResult, row: number): void {
    this.prefilling = this.prefilling.filter((s) => s !== sequence);
    if (sequence.settled) return;
    this.accept(sequence, output.logits, row * this.model.vocabSize);
    if (!sequence.settled) this.batch.join(sequence);
  }

  private async decodeStep(): Promise<void> {
    const startedAt = performance.now();
    const rows = this.batch.rows;
    const { pastKeys, pastValues, bias, past } = this.batch.prepare();
    const output = await this.backend.run({
      batch: rows.length,
      seq: 1,
      past,
      inputIds: BigInt64Array.from(rows, (s) => BigInt(s.generated[s.generated.length - 1]!)),
      positionIds: BigInt64Array.from(rows, (s) => BigInt(s.cache.length)),
      bias,
      pastKeys,
      pastValues,
    });
    this.counters.decodeSteps++;
    this.countExperts(output);
    this.batch.commit(output.newKeys, output.newValues);
    // Queries only steer sparse page choice, so a row copies them once its next views can be sparse.
    const sparseFrom = this.model.maxContextTokens - headroom;
    rows.forEach((sequence, row) => {
      if (output.lastQueries && sequence.cache.length > sparseFrom) sequence.queries = this.rowQueries(output, row);
      if (!sequence.settled) this.accept(sequence, output.logits, row * this.model.vocabSize);
    });
    this.observer.step?.('decode', rows.length, rows.length, performance.now() - startedAt);
  }

  private rowQueries(output: StepResult, row: number): Float32Array[] | undefined {
    if (!output.lastQueries) return undefined;
    const size = this.shape.numHeads * this.shape.headDim;
    return output.lastQueries.map((queries) => queries.slice(row * size, (row + 1) * size));
  }

  /** Adds a call's expert assignments to the load, less those of its `paddingTokens` padding tokens. */
  private countExperts(output: StepResult, paddingTokens = 0): void {
    if (!output.expertCounts) return;
    const padding = this.backend.paddingExpertCounts;
    for (let i = 0; i < this.expertLoad.length; i++) this.expertLoad[i]! += output.expertCounts[i]! - paddingTokens * (padding?.[i] ?? 0);
  }

  /**
   * Samples the next token for one sequence from its logits row and settles it when it is done.
   * A failure in the request's own callbacks or constraint fails that request only.
   */
  private accept(sequence: Sequence, logits: Float32Array, offset: number): void {
    try {
      this.acceptToken(sequence, logits, offset);
    } catch (error) {
      const message = `request ${sequence.id} failed in its own onText callback or constraint: ${(error as Error).message}`;
      this.settle(sequence, new EngineError('request_failed', message, { cause: error }));
    }
  }

  /**
   * Samples the next token. A constrained sequence keeps room to close its value: when the
   * sampled token would leave too few tokens for the shortest completion, the engine starts
   * emitting that completion instead.
   */
  private sampleNext(sequence: Sequence, logits: Float32Array, offset: number): number {
    const vocab = this.model.vocabSize;
    const constraint = sequence.constraint;
    if (!constraint) return sampleToken(logits, offset, vocab, sequence.sampling, sequence.random);

    const row = logits.subarray(offset, offset + vocab);
    constraint.maskLogits(row);
    if (!row.some((value) => value > -Infinity)) throw new Error('the constraint allows no token');
    const token = sampleToken(logits, offset, vocab, sequence.sampling, sequence.random);
    if (this.endIds.has(token)) return token;

    const room = sequence.maxNewTokens - sequence.generated.length - 1;
    if (constraint.fitsAfter(token, room)) return token;
    const completion = constraint.completion();
    // Without a completion that fits, the sampled token is kept and the output may be cut.
    if (completion === undefined || completion.length > room + 1) return token;
    if (completion.length === 0) {
      // The value may end here (a number that could take more digits), so it ends now.
      const end = this.endTokenIds[0];
      if (end === undefined) return token;
      sequence.forced = [];
      return end;
    }
    sequence.forced = completion.slice(1);
    return completion[0]!;
  }

  private acceptToken(sequence: Sequence, logits: Float32Array, offset: number): void {
    const token = sequence.forced?.shift() ?? this.sampleNext(sequence, logits, offset);
    const now = performance.now();
    if (sequence.firstTokenAt === 0) {
      sequence.firstTokenAt = now;
      this.observer.firstToken?.(now - sequence.enqueuedAt);
    } else {
      this.observer.interToken?.(now - sequence.lastTokenAt);
    }
    sequence.lastTokenAt = now;
    this.counters.generatedTokens++;

    // An end token that the engine chose to close a value ends the request even when end tokens do not.
    let ended = this.endIds.has(token) || (sequence.forced !== undefined && this.endTokenIds.includes(token));
    let stopHit = false;
    if (!ended) {
      sequence.constraint?.accept(token);
      sequence.generated.push(token);
      sequence.pending += sequence.decoder.push(sequence.generated);
      if (sequence.constraint?.isComplete() || sequence.forced?.length === 0) ended = true;
      // Text up to a stop string is final; a tail that could start one is held back.
      const stopAt = firstStop(sequence.pending, sequence.stop);
      stopHit = stopAt !== -1;
      const release = stopHit ? stopAt : sequence.pending.length - heldTail(sequence.pending, sequence.stop);
      const delta = sequence.pending.slice(0, release);
      sequence.pending = stopHit ? '' : sequence.pending.slice(release);
      if (delta) {
        sequence.text += delta;
        sequence.onText?.(delta);
      }
    }
    // onText may have aborted the request, which settled it.
    if (sequence.settled) return;

    const atLength = sequence.generated.length >= sequence.maxNewTokens;
    const overflow = sequence.cache.length + 1 >= this.maxContextTokens;
    if (ended || stopHit || atLength || overflow) {
      // Text the decoder still holds back (complete characters before a cut one) is final now.
      if (!stopHit) {
        sequence.pending += sequence.decoder.flush(sequence.generated);
        const stopAt = firstStop(sequence.pending, sequence.stop);
        if (stopAt !== -1) {
          sequence.pending = sequence.pending.slice(0, stopAt);
          stopHit = true;
        }
      }
      if (sequence.pending) {
        sequence.text += sequence.pending;
        sequence.onText?.(sequence.pending);
        sequence.pending = '';
        if (sequence.settled) return;
      }
      this.counters.completed++;
      this.settle(sequence, {
        text: sequence.text,
        promptTokens: sequence.promptIds.length,
        completionTokens: sequence.generated.length,
        // A value closed early at the token limit reports 'length', as a cut one would.
        finishReason: (ended || stopHit) && sequence.forced === undefined ? 'stop' : 'length',
        queueMs: sequence.startedAt - sequence.enqueuedAt,
        firstTokenMs: sequence.firstTokenAt - sequence.enqueuedAt,
        totalMs: now - sequence.enqueuedAt,
      });
    }
  }
}

/** Returns the index of the earliest stop string in `text`, or -1. */
function firstStop(text: string, stops: readonly string[]): number {
  let first = -1;
  for (const stop of stops) {
    const at = text.indexOf(stop);
    if (at !== -1 && (first === -1 || at < first)) first = at;
  }
  return first;
}

/** Returns the length of the longest tail of `text` that is a proper prefix of a stop string. */
function heldTail(text: string, stops: readonly string[]): number {
  let held = 0;
  for (const stop of stops) {
    for (let length = Math.min(stop.length - 1, text.length); length > held; length--) {
      if (text.endsWith(stop.slice(0, length))) {
        held = length;
        break;
      }
    }
  }
  return held;
}
