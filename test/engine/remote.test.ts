import { inspect } from 'node:util';
import type { Logger } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { EngineOverloaded } from '../../engine/errors.ts';
import { OpenAiCompatibleGenerator, type OpenAiBackendOptions } from '../../engine/remote/openai-backend.ts';
import { FakeOpenAiServer, streamReply } from '../support/fake-openai-server.ts';

let server: FakeOpenAiServer;

beforeAll(async () => {
  server = await FakeOpenAiServer.start();
});

afterAll(async () => {
  await server.close();
});

beforeEach(() => {
  server.reset();
});

function generator(options: Partial<OpenAiBackendOptions> = {}): OpenAiCompatibleGenerator {
  return new OpenAiCompatibleGenerator({
    baseUrl: server.baseUrl,
    model: 'longcat-test',
    backoffBaseMs: 5,
    backoffMaxMs: 20,
    requestTimeoutMs: 5_000,
    firstTokenTimeoutMs: 2_000,
    ...options,
  });
}

const prompt = '<|sys|>user_agent\n<|customer|>我的外卖怎么还没到？\n<|agent|>';

describe('OpenAiCompatibleGenerator streaming', () => {
  it('streams deltas in order', async () => {
    server.enqueue(streamReply(['{"intent":', '"query_delivery",', '"reply":"马上"}'], { usage: { promptTokens: 21, completionTokens: 9 } }));
    const deltas: string[] = [];

    const result = await generator().generate({ prompt, onText: (delta) => deltas.push(delta) });

    expect(deltas).toEqual(['{"intent":', '"query_delivery",', '"reply":"马上"}']);
    expect(result.text).toBe(deltas.join(''));
    expect(result.promptTokens).toBe(21);
    expect(result.completionTokens).toBe(9);
    expect(result.finishReason).toBe('stop');
    expect(result.totalMs).toBeGreaterThanOrEqual(result.firstTokenMs);
  });

  it('maps request parameters', async () => {
    server.enqueue(streamReply(['ok']));

    await generator().generate({ prompt, maxNewTokens: 42, sampling: { temperature: 0.7, topP: 0.9, seed: 1234 }, stop: ['<|end|>', '\n\n'] });

    expect(server.requests).toHaveLength(1);
    expect(server.requests[0]!.path).toBe('/v1/completions');
    expect(server.requests[0]!.body).toEqual({
      model: 'longcat-test',
      prompt,
      max_tokens: 42,
      temperature: 0.7,
      top_p: 0.9,
      seed: 1234,
      stop: ['<|end|>', '\n\n'],
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('asks the server for structured output under a response schema', async () => {
    server.enqueue(streamReply(['{"ok":true}']));

    await generator().generate({ prompt, responseSchema: z.object({ ok: z.boolean() }) });

    expect(server.requests[0]!.body.response_format).toMatchObject({
      type: 'json_schema',
      json_schema: { schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } },
    });
  });

  it('sends defaults and omits unset fields', async () => {
    server.enqueue(streamReply(['ok']));

    await generator().generate({ prompt });

    const body = server.requests[0]!.body;
    expect(body.max_tokens).toBe(128);
    expect(body.temperature).toBe(0);
    expect(body.top_p).toBe(1);
    expect(body).not.toHaveProperty('seed');
    expect(body).not.toHaveProperty('stop');
    expect(body).not.toHaveProperty('response_format');
  });

  it.each([
    ['stop', 'stop'],
    ['length', 'length'],
  ] as const)('maps finish_reason %s', async (serverReason, expected) => {
    server.enqueue(streamReply(['a', 'b'], { finish: serverReason }));

    const result = await generator().generate({ prompt, stop: ['c'] });

    expect(result.finishReason).toBe(expected);
  });

  it('reports zero tokens without usage', async () => {
    server.enqueue({ kind: 'stream', steps: [{ text: 'hi' }, { finish: 'stop' }, { done: true }] });

    const result = await generator().generate({ prompt });

    expect(result.text).toBe('hi');
    expect(result.promptTokens).toBe(0);
    expect(result.completionTokens).toBe(0);
  });

  it('streams chat deltas', async () => {
    server.enqueue(streamReply(['你好', '，请稍等']));
    const deltas: string[] = [];

    const result = await generator({ api: 'chat' }).generate({ prompt, maxNewTokens: 16, onText: (delta) => deltas.push(delta) });

    expect(server.requests[0]!.path).toBe('/v1/chat/completions');
    expect(server.requests[0]!.body.messages).toEqual([{ role: 'user', content: prompt }]);
    expect(server.requests[0]!.body).not.toHaveProperty('prompt');
    expect(server.requests[0]!.body.max_tokens).toBe(16);
    expect(deltas).toEqual(['你好', '，请稍等']);
    expect(result.text).toBe('你好，请稍等');
  });

  it('decodes UTF-8 split across writes', async () => {
    const bytes = Buffer.from(`data: ${JSON.stringify({ id: 'cmpl-fake', object: 'text_completion', choices: [{ index: 0, text: '骑手', finish_reason: null }] })}\n\n`);
    const cut = bytes.indexOf(Buffer.from('骑')) + 1;
    server.enqueue({
      kind: 'stream',
      steps: [{ raw: bytes.subarray(0, cut) }, { delayMs: 20 }, { raw: bytes.subarray(cut) }, { finish: 'stop' }, { done: true }],
    });

    const result = await generator().generate({ prompt });

    expect(result.text).toBe('骑手');
  });

  it('sends the API key as a bearer token', async () => {
    server.enqueue(streamReply(['a']), streamReply(['b']));

    await generator({ apiKey: 'sk-test-123' }).generate({ prompt });
    await generator().generate({ prompt });

    expect(server.requests[0]!.headers.authorization).toBe('Bearer sk-test-123');
    expect(server.requests[1]!.headers.authorization).toBeUndefined();
  });

  it('keeps the API key out of inspection', () => {
    const output = inspect(generator({ apiKey: 'sk-test-123' }), { depth: 5, showHidden: true });

    expect(output).not.toContain('sk-test-123');
  });
});

describe('OpenAiCompatibleGenerator cancellation and timeouts', () => {
  it('rejects an aborted request without a call', async () => {
    const controller = new AbortController();
    controller.abort();

    await expect(generator().generate({ prompt, signal: controller.signal })).rejects.toMatchObject({ code: 'aborted' });
    expect(server.requests).toHaveLength(0);
  });

  it('aborts mid-stream and closes the connection', async () => {
    server.enqueue({ kind: 'stream', steps: [{ text: 'a' }, { delayMs: 20 }, { text: 'b' }, { delayMs: 5_000 }, { text: 'c' }, { finish: 'stop' }, { done: true }] });
    const controller = new AbortController();
    const deltas: string[] = [];

    const pending = generator().generate({
      prompt,
      signal: controller.signal,
      onText: (delta) => {
        deltas.push(delta);
        if (deltas.length === 2) controller.abort();
      },
    });

    await expect(pending).rejects.toMatchObject({ code: 'aborted' });
    expect(deltas).toEqual(['a', 'b']);
    expect(await server.requests[0]!.closed).toBe(true);
  });

  it('aborts during a backoff wait', async () => {
    server.enqueue({ kind: 'status', status: 503, message: 'busy' });
    const controller = new AbortController();
    const started = performance.now();

    const pending = generator({ backoffBaseMs: 5_000, backoffMaxMs: 5_000 }).generate({ prompt, signal: controller.signal });
    setTimeout(() => controller.abort(), 100);

    await expect(pending).rejects.toMatchObject({ code: 'aborted' });
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(server.requests).toHaveLength(1);
  });

  it('times out waiting for the first token', async () => {
    server.enqueue({ kind: 'hang' });
    const started = performance.now();

    await expect(generator({ firstTokenTimeoutMs: 150 }).generate({ prompt })).rejects.toMatchObject({
      code: 'inference_failed',
      message: expect.stringContaining('firstTokenTimeoutMs'),
    });
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(await server.requests[0]!.closed).toBe(true);
    expect(server.requests).toHaveLength(1);
  });

  it('times out a stalled stream', async () => {
    server.enqueue({ kind: 'stream', steps: [{ text: 'a' }, { delayMs: 5_000 }, { text: 'b' }, { finish: 'stop' }, { done: true }] });
    const deltas: string[] = [];
    const started = performance.now();

    await expect(generator({ requestTimeoutMs: 200 }).generate({ prompt, onText: (delta) => deltas.push(delta) })).rejects.toMatchObject({
      code: 'inference_failed',
      message: expect.stringContaining('requestTimeoutMs'),
    });
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(deltas).toEqual(['a']);
    expect(await server.requests[0]!.closed).toBe(true);
  });

  it('aborts in-flight requests on close', async () => {
    server.enqueue({ kind: 'hang' });
    const remote = generator();

    const pending = remote.generate({ prompt });
    await waitFor(() => server.requests.length === 1);
    await remote.close();

    await expect(pending).rejects.toMatchObject({ code: 'aborted' });
    await expect(remote.generate({ prompt })).rejects.toMatchObject({ code: 'closed' });
    expect(await server.requests[0]!.closed).toBe(true);
  });
});

describe('OpenAiCompatibleGenerator retries', () => {
  it('retries a 503 then succeeds', async () => {
    server.enqueue({ kind: 'status', status: 503, message: 'busy' }, { kind: 'status', status: 503, message: 'busy' }, streamReply(['done']));

    const result = await generator({ maxRetries: 2 }).generate({ prompt });

    expect(result.text).toBe('done');
    expect(server.requests).toHaveLength(3);
    expect(result.queueMs).toBeGreaterThan(0);
  });

  it('logs each retry without the API key', async () => {
    server.enqueue({ kind: 'status', status: 503, message: 'busy' }, streamReply(['done']));
    const warnings: unknown[][] = [];
    const logger = { warn: (...args: unknown[]) => warnings.push(args) } as unknown as Logger;

    await generator({ apiKey: 'sk-test-123', logger }).generate({ prompt });

    expect(warnings).toHaveLength(1);
    expect(warnings[0]![0]).toMatchObject({ attempt: 1, maxRetries: 2 });
    expect(inspect(warnings, { depth: 5 })).not.toContain('sk-test-123');
  });

  it.each([502, 504])('retries a %i', async (status) => {
    server.enqueue({ kind: 'status', status, message: 'gateway' }, streamReply(['done']));

    const result = await generator().generate({ prompt });

    expect(result.text).toBe('done');
    expect(server.requests).toHaveLength(2);
  });

  it('retries a dropped connection', async () => {
    server.enqueue({ kind: 'drop' }, streamReply(['done']));

    const result = await generator().generate({ prompt });

    expect(result.text).toBe('done');
    expect(server.requests).toHaveLength(2);
  });

  it('retries a stream cut before any text', async () => {
    server.enqueue({ kind: 'stream', steps: [{ delayMs: 10 }, { drop: true }] }, streamReply(['done']));

    const result = await generator().generate({ prompt });

    expect(result.text).toBe('done');
    expect(server.requests).toHaveLength(2);
  });

  it('gives up on persistent 429 as overloaded', async () => {
    server.enqueue(...Array.from({ length: 3 }, () => ({ kind: 'status', status: 429, message: 'rate limited' }) as const));

    const error = await generator({ maxRetries: 2 })
      .generate({ prompt })
      .catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(EngineOverloaded);
    expect(error).toMatchObject({ code: 'overloaded' });
    expect(server.requests).toHaveLength(3);
  });

  it('gives up on persistent 502 as failed', async () => {
    server.enqueue(...Array.from({ length: 2 }, () => ({ kind: 'status', status: 502, message: 'bad gateway' }) as const));

    await expect(generator({ maxRetries: 1 }).generate({ prompt })).rejects.toMatchObject({ code: 'inference_failed' });
    expect(server.requests).toHaveLength(2);
  });

  it('reports unreachable server as failed', async () => {
    const closed = await FakeOpenAiServer.start();
    const baseUrl = closed.baseUrl;
    await closed.close();

    await expect(generator({ baseUrl, maxRetries: 1 }).generate({ prompt })).rejects.toMatchObject({ code: 'inference_failed' });
  });

  it('stops retrying at the deadline', async () => {
    server.enqueue(...Array.from({ length: 3 }, () => ({ kind: 'status', status: 503, message: 'busy' }) as const));
    const started = performance.now();

    const pending = generator({ maxRetries: 2, backoffBaseMs: 1_000, backoffMaxMs: 1_000, requestTimeoutMs: 300 }).generate({ prompt });

    await expect(pending).rejects.toMatchObject({ code: 'overloaded' });
    expect(performance.now() - started).toBeLessThan(300);
    expect(server.requests).toHaveLength(1);
  });

  it('does not retry after the first token', async () => {
    server.enqueue({ kind: 'stream', steps: [{ text: '您好' }, { delayMs: 20 }, { drop: true }] }, streamReply(['您好', '，骑手马上到']));
    const deltas: string[] = [];

    await expect(generator().generate({ prompt, onText: (delta) => deltas.push(delta) })).rejects.toMatchObject({ code: 'inference_failed' });
    expect(deltas).toEqual(['您好']);
    expect(server.requests).toHaveLength(1);
  });

  it('fails a stream that ends without [DONE] after text', async () => {
    server.enqueue({ kind: 'stream', steps: [{ text: 'partial' }] });

    await expect(generator().generate({ prompt })).rejects.toMatchObject({ code: 'inference_failed' });
    expect(server.requests).toHaveLength(1);
  });
});

describe('OpenAiCompatibleGenerator errors', () => {
  it('maps 400 to invalid_request with the server message', async () => {
    server.enqueue({ kind: 'status', status: 400, message: 'temperature must be non-negative' });

    await expect(generator().generate({ prompt })).rejects.toMatchObject({
      code: 'invalid_request',
      message: expect.stringContaining('temperature must be non-negative'),
    });
    expect(server.requests).toHaveLength(1);
  });

  it('maps a context length 400 to context_overflow', async () => {
    server.enqueue({ kind: 'status', status: 400, message: "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens." });

    await expect(generator().generate({ prompt })).rejects.toMatchObject({ code: 'context_overflow' });
  });

  it.each([401, 403])('maps %i to inference_failed', async (status) => {
    server.enqueue({ kind: 'status', status, message: 'invalid api key' });

    await expect(generator().generate({ prompt })).rejects.toMatchObject({ code: 'inference_failed', message: expect.stringContaining('API key') });
    expect(server.requests).toHaveLength(1);
  });

  it('maps 500 to inference_failed without retry', async () => {
    server.enqueue({ kind: 'status', status: 500, message: 'CUDA error' });

    await expect(generator().generate({ prompt })).rejects.toMatchObject({ code: 'inference_failed' });
    expect(server.requests).toHaveLength(1);
  });

  it('rejects a malformed chunk', async () => {
    server.enqueue({ kind: 'stream', steps: [{ text: 'a' }, { raw: 'data: {"choices": [oops\n\n' }, { delayMs: 2_000 }, { finish: 'stop' }, { done: true }] });

    await expect(generator().generate({ prompt })).rejects.toMatchObject({
      code: 'inference_failed',
      message: expect.stringContaining('oops'),
    });
    expect(await server.requests[0]!.closed).toBe(true);
  });

  it('truncates a long malformed chunk', async () => {
    server.enqueue({ kind: 'stream', steps: [{ raw: `data: ${'x'.repeat(5_000)}\n\n` }] });

    const error = (await generator()
      .generate({ prompt })
      .catch((caught: unknown) => caught)) as Error;

    expect(error).toMatchObject({ code: 'inference_failed' });
    expect(error.message.length).toBeLessThan(500);
  });

  it('rejects a chunk of the wrong shape', async () => {
    server.enqueue({ kind: 'stream', steps: [{ raw: 'data: {"choices": "none"}\n\n' }, { done: true }] });

    await expect(generator().generate({ prompt })).rejects.toMatchObject({ code: 'inference_failed' });
    expect(server.requests).toHaveLength(1);
  });

  it('rejects an error event mid-stream', async () => {
    server.enqueue({ kind: 'stream', steps: [{ text: 'a' }, { raw: 'data: {"error": {"message": "engine dead", "code": 500}}\n\n' }] });

    await expect(generator().generate({ prompt })).rejects.toMatchObject({ code: 'inference_failed', message: expect.stringContaining('engine dead') });
  });

  it.each([
    ['maxNewTokens of 0', { maxNewTokens: 0 }],
    ['negative temperature', { sampling: { temperature: -1 } }],
    ['empty prompt', { prompt: '' }],
  ])('rejects %s without a call', async (_name, overrides) => {
    await expect(generator().generate({ prompt, ...overrides })).rejects.toMatchObject({ code: 'invalid_request' });
    expect(server.requests).toHaveLength(0);
  });

  it('rejects invalid options', () => {
    expect(() => generator({ baseUrl: 'not a url' })).toThrow(expect.objectContaining({ code: 'invalid_request' }));
    expect(() => generator({ maxConcurrentRequests: 0 })).toThrow(expect.objectContaining({ code: 'invalid_request' }));
  });
});

describe('OpenAiCompatibleGenerator concurrency bound', () => {
  it('rejects requests past the bound as overloaded', async () => {
    server.enqueue({ kind: 'hang' }, streamReply(['after']));
    const remote = generator({ maxConcurrentRequests: 1 });
    const controller = new AbortController();

    const first = remote.generate({ prompt, signal: controller.signal });
    const second = remote.generate({ prompt }).catch((caught: unknown) => caught);

    expect(await second).toBeInstanceOf(EngineOverloaded);
    expect(remote.activeRequests).toBe(1);
    // The hang reply must go to the first request, so it has to reach the server before the abort.
    await waitFor(() => server.requests.length === 1);
    controller.abort();
    await expect(first).rejects.toMatchObject({ code: 'aborted' });
    expect(remote.activeRequests).toBe(0);
    expect((await remote.generate({ prompt })).text).toBe('after');
    expect(server.requests).toHaveLength(2);
  });
});

/** Polls `condition` every 5 ms for at most one second. */
async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error('condition not met within one second');
}
