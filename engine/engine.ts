/**
 * The shared inference engine: one per process. Queued requests are prefilled together in one
 * left-padded call, then decoded together, one token per running request per step, in a
 * single batched call.
 *
 * NOTE: this is the v0 scheduler. Prefill is not chunked, so a long prompt delays the running
 * requests' next step. The batch's KV cache is rebuilt by copying whenever a request joins or
 * leaves, and with the standard layout the graph also copies the whole cache on every step
 * (past/present concat), so both costs grow with context length.
 */
import { z } from 'zod';
import { EngineError, EngineOverloaded } from './errors.ts';
import { readModelDir, type ModelFiles } from './model-dir.ts';
import { OnnxDecoderBackend, type ExecutionProvider, type StepOutput } from './onnx-backend.ts';
import { createRandom, sampleToken, samplingSchema, type Sampling } from './sampler.ts';
import { StreamDecoder, TextTokenizer } from './tokenizer.ts';

export const generateRequestSchema = z.object({
  prompt: z.string().min(1),
  maxNewTokens: z.number().int().min(1).max(4096).default(128),
  sampling: samplingSchema.default({ temperature: 0, topP: 1 }),
  stop: z.array(z.string().min(1)).max(8).default([]),
  priority: z.enum(['live', 'simulation']).default('live'),
});

export type GenerateRequest = z.input<typeof generateRequestSchema> & {
  signal?: AbortSignal;
  /** Called with each newly decoded piece of text, in order. */
  onText?: (delta: string) => void;
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

export interface EngineOptions {
  modelDir: string;
  maxBatchSize?: number;
  maxQueuedRequests?: number;
  executionProvider?: ExecutionProvider;
  intraOpThreads?: number;
  /**
   * Whether the end token finishes a request (default true). Benchmarks turn this off so every
   * request decodes exactly maxNewTokens tokens.
   */
  stopAtEndToken?: boolean;
}

export interface EngineStats {
  queued: number;
  running: number;
  completed: number;
  aborted: number;
  rejected: number;
  decodeSteps: number;
  prefillCalls: number;
  generatedTokens: number;
}

interface Sequence {
  id: number;
  promptIds: number[];
  generated: number[];
  maxNewTokens: number;
  sampling: Required<Pick<Sampling, 'temperature' | 'topP'>>;
  stop: string[];
  priority: 'live' | 'simulation';
  random: () => number;
  decoder: StreamDecoder;
  text: string;
  /** Tokens held in this sequence's KV cache. */
  cacheLength: number;
  enqueuedAt: number;
  startedAt: number;
  firstTokenAt: number;
  settled: boolean;
  onText?: (delta: string) => void;
  resolve: (result: GenerateResult) => void;
  reject: (error: Error) => void;
  cleanup: () => void;
}

/** The location of a running sequence's KV rows: one row of a left-padded tensor set. */
interface CacheLocation {
  tensors: Float32Array[];
  row: number;
  paddedLength: number;
}

/**
 * Upper bound on the padded tokens (batch × longest prompt) of one prefill call, which bounds
 * its logits buffer (tokens × vocabulary × 4 bytes) and attention scores.
 */
const maxPrefillTokens = 4096;

/**
 * Largest share of padding a grouped prefill may add: prompts of very different lengths are
 * prefilled in separate calls, because padded positions cost as much as real ones.
 */
const maxPrefillPadding = 0.25;

export class Engine implements TextGenerator {
  readonly maxContextTokens: number;
  private readonly maxBatchSize: number;
  private readonly maxQueuedRequests: number;
  private readonly queue: Sequence[] = [];
  private running: Sequence[] = [];
  private batchCache: Float32Array[] = [];
  private batchPaddedLength = 0;
  private loop: Promise<void> | null = null;
  private closed = false;
  private nextId = 1;
  private readonly endIds: Set<number>;
  private readonly counters = { completed: 0, aborted: 0, rejected: 0, decodeSteps: 0, prefillCalls: 0, generatedTokens: 0 };

  private constructor(
    readonly model: ModelFiles,
    readonly tokenizer: TextTokenizer,
    private readonly backend: OnnxDecoderBackend,
    options: EngineOptions,
  ) {
    this.maxContextTokens = model.maxContextTokens;
    this.maxBatchSize = options.maxBatchSize ?? 16;
    this.maxQueuedRequests = options.maxQueuedRequests ?? 256;
    this.endIds = new Set(model.eosTokenIds);
    const endToken = tokenizer.tokenId('<|end|>');
    if (endToken !== undefined) this.endIds.add(endToken);
    if (options.stopAtEndToken === false) this.endIds.clear();
  }

  static async load(options: EngineOptions): Promise<Engine> {
    const model = readModelDir(options.modelDir);
    const tokenizer = new TextTokenizer(model);
    const backend = await OnnxDecoderBackend.load(model, {
      executionProvider: options.executionProvider ?? 'cpu',
      intraOpThreads: options.intraOpThreads ?? 1,
    });
    return new Engine(model, tokenizer, backend, options);
  }

  stats(): EngineStats {
    // A settled sequence keeps its batch row until the next step boundary, so only live ones count.
    const live = (list: Sequence[]) => list.filter((s) => !s.settled).length;
    return { queued: live(this.queue), running: live(this.running), ...this.counters };
  }

  generate(request: GenerateRequest): Promise<GenerateResult> {
    if (this.closed) return Promise.reject(new EngineError('closed', 'engine is closed'));
    const parsed = generateRequestSchema.safeParse(request);
    if (!parsed.success) {
      const detail = parsed.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; ');
      return Promise.reject(new EngineError('invalid_request', `invalid generate request: ${detail}`));
    }
    const options = parsed.data;
    if (request.signal?.aborted) return Promise.reject(new EngineError('aborted', 'request was aborted before it started'));

    const promptIds = this.tokenizer.encode(options.prompt);
    if (promptIds.length + options.maxNewTokens > this.maxContextTokens) {
      return Promise.reject(
        new EngineError(
          'context_overflow',
          `prompt of ${promptIds.length} tokens plus maxNewTokens ${options.maxNewTokens} exceeds the model context of ${this.maxContextTokens} tokens; shorten the prompt`,
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
        text: '',
        cacheLength: 0,
        enqueuedAt: performance.now(),
        startedAt: 0,
        firstTokenAt: 0,
        settled: false,
        onText: request.onText,
        resolve,
        reject,
        cleanup: () => {},
      };
      if (request.signal) {
        const signal = request.signal;
        const onAbort = () => this.abort(sequence, 'request was aborted');
        signal.addEventListener('abort', onAbort, { once: true });
        sequence.cleanup = () => signal.removeEventListener('abort', onAbort);
      }
      this.enqueue(sequence);
      this.loop ??= this.runLoop().finally(() => (this.loop = null));
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const sequence of [...this.queue, ...this.running]) this.abort(sequence, 'engine is closing');
    await this.loop;
    await this.backend.close();
  }

  private enqueue(sequence: Sequence): void {
    // Live chat goes ahead of every queued simulation request, behind earlier live ones.
    const index = sequence.priority === 'live' ? this.queue.findIndex((s) => s.priority === 'simulation') : -1;
    if (index === -1) this.queue.push(sequence);
    else this.queue.splice(index, 0, sequence);
  }

  private abort(sequence: Sequence, reason: string): void {
    if (sequence.settled) return;
    // A queued request leaves the queue at once, so aborted work never counts against its bound.
    const queued = this.queue.indexOf(sequence);
    if (queued !== -1) this.queue.splice(queued, 1);
    this.counters.aborted++;
    this.settle(sequence, new EngineError('aborted', reason));
  }

  private settle(sequence: Sequence, outcome: GenerateResult | Error): void {
    if (sequence.settled) return;
    sequence.settled = true;
    sequence.cleanup();
    if (outcome instanceof Error) sequence.reject(outcome);
    else sequence.resolve(outcome);
  }

  private async runLoop(): Promise<void> {
    while (this.queue.length > 0 || this.running.length > 0) {
      const locations = new Map<Sequence, CacheLocation>();
      this.running.forEach((sequence, row) => locations.set(sequence, { tensors: this.batchCache, row, paddedLength: this.batchPaddedLength }));
      let membershipChanged = false;

      const admitted = this.takePrefillGroup();
      if (admitted.length > 0) {
        try {
          const { cache, paddedLength } = await this.prefill(admitted);
          admitted.forEach((sequence, row) => {
            if (sequence.settled) return;
            this.running.push(sequence);
            locations.set(sequence, { tensors: cache, row, paddedLength });
            membershipChanged = true;
          });
        } catch (error) {
          for (const sequence of admitted) this.settle(sequence, error as Error);
        }
      }

      const live = this.running.filter((s) => !s.settled);
      if (live.length !== this.running.length) membershipChanged = true;
      this.running = live;
      if (membershipChanged) this.rebuildBatch(locations);
      if (this.running.length === 0) continue;

      try {
        await this.decodeStep();
      } catch (error) {
        for (const sequence of this.running) this.settle(sequence, error as Error);
        this.running = [];
      }
      // Let abort handlers and new requests run between steps.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }


  /**
   * Takes the queued requests that join the batch next and are prefilled together, in queue
   * order: as many as the batch has room for, while the left-padded prefill stays within
   * `maxPrefillTokens` and padding adds at most `maxPrefillPadding` to the real prompt tokens.
   */
  private takePrefillGroup(): Sequence[] {
    const group: Sequence[] = [];
    let longest = 0;
    let promptTokens = 0;
    while (this.queue.length > 0 && this.running.length + group.length < this.maxBatchSize) {
      const next = this.queue[0]!;
      if (next.settled) {
        this.queue.shift();
        continue;
      }
      const length = Math.max(longest, next.promptIds.length);
      const padded = length * (group.length + 1);
      const fits = padded <= maxPrefillTokens && padded <= (promptTokens + next.promptIds.length) * (1 + maxPrefillPadding);
      if (group.length > 0 && !fits) break;
      this.queue.shift();
      group.push(next);
      longest = length;
      promptTokens += next.promptIds.length;
    }
    return group;
  }

  /** Prefills the prompts of `group` in one call, left-padded to the longest, and samples each one's first token. */
  private async prefill(group: Sequence[]): Promise<{ cache: Float32Array[]; paddedLength: number }> {
    const startedAt = performance.now();
    const paddedLength = Math.max(...group.map((s) => s.promptIds.length));
    const batchSize = group.length;
    const inputIds = new BigInt64Array(batchSize * paddedLength);
    const attentionMask = new BigInt64Array(batchSize * paddedLength);
    const positionIds = new BigInt64Array(batchSize * paddedLength);
    group.forEach((sequence, row) => {
      sequence.startedAt = startedAt;
      const pad = paddedLength - sequence.promptIds.length;
      sequence.promptIds.forEach((id, i) => {
        inputIds[row * paddedLength + pad + i] = BigInt(id);
        attentionMask[row * paddedLength + pad + i] = 1n;
        positionIds[row * paddedLength + pad + i] = BigInt(i);
      });
    });

    const output = await this.backend.run({
      batchSize,
      sequenceLength: paddedLength,
      pastLength: 0,
      inputIds,
      attentionMask,
      positionIds,
      past: Array.from({ length: 2 * this.model.numLayers }, () => new Float32Array(0)),
    });
    this.counters.prefillCalls++;
    group.forEach((sequence, row) => {
      sequence.cacheLength = sequence.promptIds.length;
      if (!sequence.settled) this.accept(sequence, output, (row * paddedLength + paddedLength - 1) * this.model.vocabSize);
    });
    return { cache: output.present, paddedLength };
  }

  private async decodeStep(): Promise<void> {
    const rows = this.running;
    const batchSize = rows.length;
    const pastLength = this.batchPaddedLength;
    const attentionMask = new BigInt64Array(batchSize * (pastLength + 1));
    rows.forEach((sequence, row) => {
      const start = row * (pastLength + 1);
      attentionMask.fill(1n, start + pastLength - sequence.cacheLength, start + pastLength + 1);
    });
    const output = await this.backend.run({
      batchSize,
      sequenceLength: 1,
      pastLength,
      inputIds: BigInt64Array.from(rows, (s) => BigInt(s.generated[s.generated.length - 1]!)),
      attentionMask,
      positionIds: BigInt64Array.from(rows, (s) => BigInt(s.cacheLength)),
      past: this.batchCache,
    });
    this.counters.decodeSteps++;
    this.batchCache = output.present;
    this.batchPaddedLength = pastLength + 1;
    rows.forEach((sequence, row) => {
      sequence.cacheLength++;
      if (!sequence.settled) this.accept(sequence, output, row * this.model.vocabSize);
    });
  }

  /** Samples the next token for one sequence from `output` and settles it when it is done. */
  private accept(sequence: Sequence, output: StepOutput, logitsOffset: number): void {
    const token = sampleToken(output.logits, logitsOffset, this.model.vocabSize, sequence.sampling, sequence.random);
    if (sequence.firstTokenAt === 0) sequence.firstTokenAt = performance.now();
    this.counters.generatedTokens++;

    const ended = this.endIds.has(token);
    if (!ended) {
      sequence.generated.push(token);
      const delta = sequence.decoder.push(sequence.generated);
      if (delta) {
        sequence.text += delta;
        sequence.onText?.(delta);
      }
    }

    const stopHit = sequence.stop.find((stop) => sequence.text.includes(stop));
    if (stopHit !== undefined) sequence.text = sequence.text.slice(0, sequence.text.indexOf(stopHit));
    const atLength = sequence.generated.length >= sequence.maxNewTokens;
    const overflow = sequence.cacheLength + 1 >= this.maxContextTokens;
    if (ended || stopHit !== undefined || atLength || overflow) {
      const now = performance.now();
      this.counters.completed++;
      this.settle(sequence, {
        text: sequence.text,
        promptTokens: sequence.promptIds.length,
        completionTokens: sequence.generated.length,
        finishReason: ended || stopHit !== undefined ? 'stop' : 'length',
        queueMs: sequence.startedAt - sequence.enqueuedAt,
        firstTokenMs: sequence.firstTokenAt - sequence.enqueuedAt,
        totalMs: now - sequence.enqueuedAt,
      });
    }
  }

  /** Copies every running sequence's KV rows into one left-padded tensor set. */
  private rebuildBatch(locations: Map<Sequence, CacheLocation>): void {
    const { numLayers, numKvHeads, headDim } = this.model;
    const rows = this.running;
    const padded = rows.reduce((max, s) => Math.max(max, s.cacheLength), 0);
    const tensors = Array.from({ length: 2 * numLayers }, () => new Float32Array(rows.length * numKvHeads * padded * headDim));

    rows.forEach((sequence, row) => {
      const source = locations.get(sequence)!;
      const length = sequence.cacheLength;
      for (let t = 0; t < tensors.length; t++) {
        const from = source.tensors[t]!;
        const to = tensors[t]!;
        for (let head = 0; head < numKvHeads; head++) {
          const fromStart = ((source.row * numKvHeads + head) * source.paddedLength + source.paddedLength - length) * headDim;
          const toStart = ((row * numKvHeads + head) * padded + padded - length) * headDim;
          to.set(from.subarray(fromStart, fromStart + length * headDim), toStart);
        }
      }
    });
    this.batchCache = tensors;
    this.batchPaddedLength = padded;
  }
}
