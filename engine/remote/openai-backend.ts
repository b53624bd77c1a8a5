/**
 * A TextGenerator backed by an OpenAI-compatible HTTP server such as vLLM or SGLang. Every request
 * streams over Server-Sent Events, and a failed request is retried only while no text has reached
 * the caller, so `onText` never receives a piece twice.
 *
 * Timeouts reject with code 'inference_failed' and a message that names the timeout. The code
 * 'aborted' stays reserved for the caller's own AbortSignal and for close(), as in the local engine.
 */
import type { Logger } from 'pino';
import { z } from 'zod';
import { generateRequestSchema, type FinishReason, type GenerateRequest, type GenerateResult, type TextGenerator } from '../engine.ts';
import { EngineError, EngineOverloaded } from '../errors.ts';
import { SseLineTooLong, SseParser } from './sse.ts';

// NOTE: the defaults below are estimates for a large model behind vLLM or SGLang, not measurements.
// A deployment should size requestTimeoutMs and firstTokenTimeoutMs from its own prefill latency.
export const openAiBackendOptionsSchema = z.object({
  /** The API root, including the version path, e.g. http://127.0.0.1:8000/v1. */
  baseUrl: z.url({ protocol: /^https?$/ }),
  /** The model name the server serves, sent as `model`. */
  model: z.string().min(1),
  /** Sent as `Authorization: Bearer <apiKey>` when set. */
  apiKey: z.string().min(1).optional(),
  /** 'completions' sends the rendered prompt as is. 'chat' wraps it in one user message. */
  api: z.enum(['completions', 'chat']).default('completions'),
  /** The deadline of one generate call, including every retry and backoff wait. */
  requestTimeoutMs: z.number().int().positive().default(120_000),
  /** The maximum wait for the first text of one attempt, counted from sending the request. */
  firstTokenTimeoutMs: z.number().int().positive().default(30_000),
  /** Retries after the first attempt, made only while no text has been passed to `onText`. */
  maxRetries: z.number().int().min(0).max(10).default(2),
  /** The backoff ceiling before the first retry, doubled for each later one up to backoffMaxMs. The wait is half the ceiling plus a random part of the other half. */
  backoffBaseMs: z.number().int().min(0).default(250),
  backoffMaxMs: z.number().int().min(0).default(4_000),
  /** Generate calls allowed in flight at once. Calls past it are rejected as overloaded instead of queued. */
  maxConcurrentRequests: z.number().int().min(1).default(64),
});

export type OpenAiBackendOptions = z.input<typeof openAiBackendOptionsSchema> & {
  /** Receives one warning per retry. The API key never reaches it. */
  logger?: Logger;
};

type BackendSettings = z.output<typeof openAiBackendOptionsSchema>;
type ValidRequest = z.output<typeof generateRequestSchema>;

/** One streamed chunk of either API. Fields that Sanfang does not use are ignored. */
const streamChunkSchema = z.object({
  choices: z
    .array(
      z.object({
        text: z.string().nullish(),
        delta: z.object({ content: z.string().nullish() }).nullish(),
        finish_reason: z.string().nullish(),
      }),
    )
    .default([]),
  usage: z.object({ prompt_tokens: z.number().int(), completion_tokens: z.number().int() }).nullish(),
});

/** The error bodies of vLLM and SGLang: OpenAI's `{ error: { message } }` or the flat `{ message }`. */
const errorBodySchema = z.union([z.object({ error: z.object({ message: z.string() }) }), z.object({ object: z.literal('error'), message: z.string() })]);

const maxQuotedChars = 200;

type AttemptOutcome = { status: 'done'; result: GenerateResult } | { status: 'retryable'; error: EngineError };

/** The state of one generate call that outlives a single attempt. */
interface CallState {
  requestId: number;
  startedAt: number;
  deadlineAt: number;
  signal: AbortSignal;
  onText?: (delta: string) => void;
}

/** EngineOverloaded with a message of this backend's choosing, because the base class words its message for the local queue. */
class RemoteOverloaded extends EngineOverloaded {
  constructor(message: string) {
    super(0, 0);
    this.message = message;
    // Recaptures the stack so its first line shows this message rather than the base class's.
    Error.captureStackTrace(this, RemoteOverloaded);
  }
}

export class OpenAiCompatibleGenerator implements TextGenerator {
  private readonly settings: Omit<BackendSettings, 'apiKey'>;
  private readonly url: string;
  // An ES private field, unlike a TypeScript `private` one, stays out of util.inspect and console output.
  readonly #headers: Record<string, string>;
  private readonly logger?: Logger;
  private readonly closing = new AbortController();
  private inFlight = 0;
  private nextRequestId = 1;

  constructor(options: OpenAiBackendOptions) {
    const { logger, ...rest } = options;
    const parsed = openAiBackendOptionsSchema.safeParse(rest);
    if (!parsed.success) {
      const detail = parsed.error.issues.map((i) => `${i.path.join('.') || 'options'}: ${i.message}`).join('; ');
      throw new EngineError('invalid_request', `invalid OpenAI-compatible backend options: ${detail}`);
    }

    const { apiKey, ...settings } = parsed.data;
    this.settings = settings;
    this.url = `${settings.baseUrl.replace(/\/+$/, '')}/${settings.api === 'chat' ? 'chat/completions' : 'completions'}`;
    this.#headers = { 'content-type': 'application/json', accept: 'text/event-stream' };
    if (apiKey !== undefined) this.#headers.authorization = `Bearer ${apiKey}`;
    this.logger = logger;
  }

  /** The number of generate calls in flight, including those waiting to retry. */
  get activeRequests(): number {
    return this.inFlight;
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    if (this.closing.signal.aborted) throw new EngineError('closed', 'engine is closed');
    const parsed = generateRequestSchema.safeParse(request);
    if (!parsed.success) {
      const detail = parsed.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; ');
      throw new EngineError('invalid_request', `invalid generate request: ${detail}`);
    }
    if (request.signal?.aborted) throw new EngineError('aborted', 'request was aborted before it started');
    if (this.inFlight >= this.settings.maxConcurrentRequests) {
      throw new RemoteOverloaded(
        `remote engine has ${this.inFlight} of ${this.settings.maxConcurrentRequests} requests in flight (maxConcurrentRequests); retry later or use a fallback reply`,
      );
    }

    this.inFlight++;
    try {
      return await this.generateWithRetries(parsed.data, request);
    } finally {
      this.inFlight--;
    }
  }

  /** Rejects new requests with code 'closed' and aborts those in flight with code 'aborted'. */
  async close(): Promise<void> {
    this.closing.abort();
  }

  private async generateWithRetries(options: ValidRequest, request: GenerateRequest): Promise<GenerateResult> {
    const startedAt = performance.now();
    const { requestTimeoutMs, maxRetries } = this.settings;
    const call = new AbortController();
    const unlinkCaller = request.signal ? forwardAbort(request.signal, call, () => new EngineError('aborted', 'request was aborted')) : () => {};
    const unlinkClosing = forwardAbort(this.closing.signal, call, () => new EngineError('aborted', 'engine is closing'));
    const deadline = setTimeout(() => call.abort(new EngineError('inference_failed', `remote request timed out after ${requestTimeoutMs} ms (requestTimeoutMs)`)), requestTimeoutMs);
    const state: CallState = {
      requestId: this.nextRequestId++,
      startedAt,
      deadlineAt: startedAt + requestTimeoutMs,
      signal: call.signal,
      onText: request.onText,
    };
    const body = JSON.stringify(this.requestBody(options, request.responseSchema));

    try {
      for (let attempt = 0; ; attempt++) {
        const outcome = await this.attempt(body, state);
        if (outcome.status === 'done') return outcome.result;

        // Giving up early when the wait would pass the deadline lets a 429 or 503 surface as overloaded, not as a timeout.
        const delayMs = this.backoffDelayMs(attempt);
        if (attempt >= maxRetries || performance.now() + delayMs >= state.deadlineAt) throw outcome.error;
        this.logger?.warn({ requestId: state.requestId, attempt: attempt + 1, maxRetries, delayMs, err: outcome.error }, 'remote generate request failed, retrying');
        await sleep(delayMs, call.signal);
      }
    } finally {
      clearTimeout(deadline);
      unlinkCaller();
      unlinkClosing();
    }
  }

  // NOTE: `priority` is not sent. vLLM rejects a nonzero priority unless it runs with --scheduling-policy priority, so live requests get no precedence over simulations on the server.
  private requestBody(options: ValidRequest, responseSchema: z.ZodType | undefined): Record<string, unknown> {
    const body: Record<string, unknown> = {
      model: this.settings.model,
      max_tokens: options.maxNewTokens,
      temperature: options.sampling.temperature,
      top_p: options.sampling.topP,
      stream: true,
      stream_options: { include_usage: true },
    };
    if (this.settings.api === 'chat') body.messages = [{ role: 'user', content: options.prompt }];
    else body.prompt = options.prompt;
    if (options.sampling.seed !== undefined) body.seed = options.sampling.seed;
    if (options.stop.length > 0) body.stop = options.stop;
    // vLLM and SGLang decode under this JSON schema (structured outputs), as the local engine's grammar does.
    if (responseSchema) body.response_format = { type: 'json_schema', json_schema: { name: 'response', schema: z.toJSONSchema(responseSchema), strict: true } };
    return body;
  }

  /** Computes the wait before retry number `attempt + 1`: exponential, capped, with equal jitter so no retry fires at once. */
  private backoffDelayMs(attempt: number): number {
    const ceilingMs = Math.min(this.settings.backoffMaxMs, this.settings.backoffBaseMs * 2 ** attempt);
    return Math.round(ceilingMs / 2 + (Math.random() * ceilingMs) / 2);
  }

  /**
   * Sends one HTTP request and reads its stream. Returns 'retryable' for failures worth another
   * attempt and throws for the rest. Stops through the call's signal and the first-token timer.
   */
  private async attempt(body: string, state: CallState): Promise<AttemptOutcome> {
    const attemptStartedAt = performance.now();
    const controller = new AbortController();
    const unlinkCall = forwardAbort(state.signal, controller, () => state.signal.reason);
    const { firstTokenTimeoutMs } = this.settings;
    const firstTokenTimer = setTimeout(
      () => controller.abort(new EngineError('inference_failed', `remote server sent no token within ${firstTokenTimeoutMs} ms (firstTokenTimeoutMs)`)),
      firstTokenTimeoutMs,
    );

    try {
      let response: Response;
      try {
        response = await fetch(this.url, { method: 'POST', headers: this.#headers, body, signal: controller.signal });
      } catch (error) {
        if (controller.signal.aborted) throw controller.signal.reason;
        return { status: 'retryable', error: new EngineError('inference_failed', `request to ${this.url} failed before a response: ${describeError(error)}`, { cause: error }) };
      }

      if (!response.ok) return await this.statusFailure(response, controller.signal);
      const contentType = response.headers.get('content-type') ?? '';
      if (!contentType.startsWith('text/event-stream')) {
        throw new EngineError('inference_failed', `remote server ${this.url} returned content-type ${quote(contentType)} for a streaming request, expected text/event-stream`);
      }
      return await this.readStream(response, state, attemptStartedAt, controller.signal, () => clearTimeout(firstTokenTimer));
    } finally {
      clearTimeout(firstTokenTimer);
      unlinkCall();
      // Releases the connection on every early exit. After a complete response this does nothing.
      controller.abort();
    }
  }

  /** Maps a non-2xx response to a retryable outcome or throws the typed error. */
  private async statusFailure(response: Response, signal: AbortSignal): Promise<AttemptOutcome> {
    const status = response.status;
    let detail: string;
    try {
      detail = errorMessage(await response.text());
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      detail = `(failed to read the error body: ${describeError(error)})`;
    }
    const where = `remote server ${this.url} returned HTTP ${status}`;

    if (status === 429 || status === 503) return { status: 'retryable', error: new RemoteOverloaded(`${where}: ${detail}; retry later or use a fallback reply`) };
    if (status === 502 || status === 504) return { status: 'retryable', error: new EngineError('inference_failed', `${where}: ${detail}`) };
    // NOTE: vLLM and SGLang report a prompt past the model's context as a 400 whose message mentions the context length. This matches that wording, so a server that words it differently gets 'invalid_request'.
    if (status === 400 && /context length|context window/i.test(detail)) throw new EngineError('context_overflow', `${where}: ${detail}`);
    if (status === 400 || status === 422) throw new EngineError('invalid_request', `${where}: ${detail}`);
    if (status === 401 || status === 403) throw new EngineError('inference_failed', `${where}, so authentication failed. Check the API key (apiKey option). Server message: ${detail}`);
    throw new EngineError('inference_failed', `${where}: ${detail}`);
  }

  private async readStream(response: Response, state: CallState, attemptStartedAt: number, signal: AbortSignal, onFirstToken: () => void): Promise<AttemptOutcome> {
    const decoder = new TextDecoder();
    const parser = new SseParser();
    let text = '';
    let callbackFailed = false;
    let firstTokenAt = 0;
    let finishReason: FinishReason | undefined;
    let usage = { promptTokens: 0, completionTokens: 0 };
    let done = false;

    const handleData = (data: string) => {
      if (done) return;
      if (data === '[DONE]') {
        done = true;
        return;
      }
      const chunk = parseChunk(data);
      if (chunk.usage) usage = { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens };
      const choice = chunk.choices[0];
      if (!choice) return;

      const delta = (this.settings.api === 'chat' ? choice.delta?.content : choice.text) ?? '';
      if (delta !== '') {
        if (firstTokenAt === 0) {
          firstTokenAt = performance.now();
          onFirstToken();
        }
        text += delta;
        try {
          state.onText?.(delta);
        } catch (error) {
          callbackFailed = true;
          throw error;
        }
      }
      if (choice.finish_reason) {
        finishReason = choice.finish_reason === 'length' ? 'length' : 'stop';
        onFirstToken();
      }
    };

    try {
      if (!response.body) throw new Error('response has no body');
      for await (const bytes of response.body) {
        for (const data of parser.push(decoder.decode(bytes, { stream: true }))) handleData(data);
      }
      for (const data of parser.push(decoder.decode())) handleData(data);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (error instanceof EngineError || callbackFailed) throw error;
      if (error instanceof SseLineTooLong) throw new EngineError('inference_failed', `remote stream from ${this.url} is malformed: ${error.message}`, { cause: error });
      return this.cutOff(text, describeError(error), error);
    }

    if (!done) return this.cutOff(text, 'the response ended before data: [DONE]');
    const now = performance.now();
    return {
      status: 'done',
      result: {
        text,
        ...usage,
        finishReason: finishReason ?? 'stop',
        // The server's own queue time is not visible to a client, so queueMs counts the failed attempts and backoff waits before this one.
        queueMs: attemptStartedAt - state.startedAt,
        firstTokenMs: (firstTokenAt || now) - state.startedAt,
        totalMs: now - state.startedAt,
      },
    };
  }

  /** Treats a stream cut off before its end as retryable only while none of its text has reached the caller. */
  private cutOff(text: string, reason: string, cause?: unknown): AttemptOutcome {
    if (text === '') return { status: 'retryable', error: new EngineError('inference_failed', `remote stream from ${this.url} failed before any text: ${reason}`, { cause }) };
    throw new EngineError('inference_failed', `remote stream from ${this.url} failed after ${text.length} characters had been streamed, so it is not retried: ${reason}`, { cause });
  }
}

/** Aborts `target` when `source` aborts. Returns the function that removes the link. */
function forwardAbort(source: AbortSignal, target: AbortController, reason: () => unknown): () => void {
  if (source.aborted) {
    target.abort(reason());
    return () => {};
  }
  const onAbort = () => target.abort(reason());
  source.addEventListener('abort', onAbort, { once: true });
  return () => source.removeEventListener('abort', onAbort);
}

/** Waits `ms`, or rejects with the signal's reason once it aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function parseChunk(data: string): z.output<typeof streamChunkSchema> {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch (error) {
    throw new EngineError('inference_failed', `remote stream sent a chunk that is not valid JSON: ${quote(data)}`, { cause: error });
  }

  const serverError = errorBodySchema.safeParse(json);
  if (serverError.success) {
    const message = 'error' in serverError.data ? serverError.data.error.message : serverError.data.message;
    throw new EngineError('inference_failed', `remote server reported an error mid-stream: ${quote(message)}`);
  }
  const chunk = streamChunkSchema.safeParse(json);
  if (!chunk.success) {
    throw new EngineError('inference_failed', `remote stream sent a chunk that is not an OpenAI completion chunk: ${quote(data)}`, { cause: chunk.error });
  }
  return chunk.data;
}

/** Extracts the message of an OpenAI-style error body, or quotes the raw body. */
function errorMessage(body: string): string {
  try {
    const parsed = errorBodySchema.safeParse(JSON.parse(body));
    if (parsed.success) return quote('error' in parsed.data ? parsed.data.error.message : parsed.data.message);
  } catch {
    // Not JSON: a proxy's HTML page or plain text is quoted below.
  }
  return body.trim() === '' ? '(empty body)' : quote(body.trim());
}

function quote(text: string): string {
  return text.length > maxQuotedChars ? `${JSON.stringify(text.slice(0, maxQuotedChars))}…` : JSON.stringify(text);
}

/** Describes a fetch failure with its cause, since undici puts the socket error (ECONNREFUSED, "other side closed") there. */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message}${cause}`;
}
