import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderPrompt, type TranscriptLine } from '../../agents/prompt.ts';
import { Engine, type EngineObserver } from '../../engine/engine.ts';
import { bytesPerToken, pageTokens } from '../../engine/kv-cache.ts';
import { defaultModelDir } from '../support/model.ts';

const shortPrompt = renderPrompt({ role: 'rider_agent', locale: 'zh', facts: { task: 'ask_eta', asked: 0 }, transcript: [] });

/** Builds a user-agent prompt whose transcript is `lines` lines of chatter, thousands of tokens long. */
function longPrompt(lines: number): string {
  const transcript: TranscriptLine[] = Array.from({ length: lines }, (_, i) =>
    i % 2 === 0 ? { speaker: 'customer', text: `第${i}次问一下，我的外卖到哪了？` } : { speaker: 'agent', text: '您好，我正在帮您查询，请稍候。' },
  );
  const prompt = renderPrompt({ role: 'user_agent', locale: 'zh', facts: { order: 'delivering', eta: 9, late: 25, comp: 'due' }, transcript: transcript.slice(0, 2) });
  // renderPrompt keeps the last 8 lines; a long dialogue is built by repeating transcript lines.
  const body = transcript.map((line) => `<|${line.speaker}|>${line.text}\n`).join('');
  return prompt.replace('<|turn|>', `${body}<|customer|>到底还要多久？\n<|turn|>`);
}

const events: string[] = [];
const observer: EngineObserver = { step: (kind, rows) => events.push(`${kind}:${rows}`) };
let engine: Engine;

beforeAll(async () => {
  engine = await Engine.load({ modelDir: defaultModelDir, maxBatchSize: 8, stopAtEndToken: false, observer, maxContextTokens: 8192 });
});

afterAll(async () => {
  await engine.close();
});

describe('Engine scheduling', () => {
  it('prefills a long prompt in chunks between decode steps of running requests', async () => {
    const running = engine.generate({ prompt: shortPrompt, maxNewTokens: 150 }).then((result) => {
      events.push('short done');
      return result;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const prompt = longPrompt(300);
    const promptTokens = engine.tokenizer.encode(prompt).length;
    expect(promptTokens).toBeGreaterThan(3000);
    events.length = 0;
    const [short, long] = await Promise.all([running, engine.generate({ prompt, maxNewTokens: 8 })]);
    expect(short.completionTokens).toBe(150);
    expect(long.promptTokens).toBe(promptTokens);

    // Until the short request finishes, a decode step runs after every prefill chunk.
    const window = events.slice(0, events.indexOf('short done'));
    const chunks = window.filter((e) => e === 'prefill:1').length;
    expect(chunks).toBe(Math.ceil(promptTokens / 256));
    window.forEach((event, i) => {
      if (event === 'prefill:1') expect(window[i + 1]).toMatch(/^decode:/);
    });
  });

  it('bounds what a long context attends to and reports its memory', async () => {
    const prompt = longPrompt(300);
    let seen: ReturnType<Engine['sequences']> = [];
    const result = await engine.generate({
      prompt,
      maxNewTokens: 16,
      onText: () => {
        if (seen.length === 0) seen = engine.sequences();
      },
    });
    expect(result.completionTokens).toBe(16);
    expect(seen).toHaveLength(1);
    const [sequence] = seen;
    expect(sequence!.contextTokens).toBeGreaterThan(3000);
    expect(sequence!.attendedTokens).toBeLessThanOrEqual(768);
    expect(sequence!.kvBytes).toBeGreaterThanOrEqual(sequence!.contextTokens * bytesPerToken(engine.shape));
    expect(engine.stats()).toMatchObject({ running: 0, kvBytes: 0, kvReservedBytes: 0 });
  });

  it('rejects a prompt past the context limit', async () => {
    await expect(engine.generate({ prompt: longPrompt(1000), maxNewTokens: 10 })).rejects.toMatchObject({ code: 'context_overflow' });
  });

  it('aborts during a chunked prefill and frees the reservation', async () => {
    const controller = new AbortController();
    events.length = 0;
    const observed = engine.generate({ prompt: longPrompt(300), maxNewTokens: 8, signal: controller.signal });
    while (events.filter((e) => e === 'prefill:1').length < 2) await new Promise((resolve) => setTimeout(resolve, 1));
    controller.abort();
    await expect(observed).rejects.toMatchObject({ code: 'aborted' });
    const chunksAtAbort = events.filter((e) => e === 'prefill:1').length;
    const after = await engine.generate({ prompt: shortPrompt, maxNewTokens: 4 });
    expect(after.completionTokens).toBe(4);
    // At most the chunk in flight when the abort landed ran after it.
    expect(events.filter((e) => e === 'prefill:1').length).toBeLessThanOrEqual(chunksAtAbort + 2);
    expect(engine.stats()).toMatchObject({ running: 0, kvReservedBytes: 0 });
  });

  it('fails a request past its deadline and keeps serving', async () => {
    const before = engine.stats().deadlineExceeded;
    await expect(engine.generate({ prompt: shortPrompt, maxNewTokens: 2000, deadlineMs: 50 })).rejects.toMatchObject({ code: 'deadline_exceeded' });
    expect(engine.stats().deadlineExceeded).toBe(before + 1);
    expect((await engine.generate({ prompt: shortPrompt, maxNewTokens: 4 })).completionTokens).toBe(4);
    expect(engine.stats()).toMatchObject({ running: 0, kvReservedBytes: 0 });
  });
});

describe('Engine isolation', () => {
  it('fails only the request whose callback throws', async () => {
    let pieces = 0;
    const innocent = Array.from({ length: 3 }, () => engine.generate({ prompt: shortPrompt, maxNewTokens: 40 }));
    const faulty = engine.generate({
      prompt: shortPrompt,
      maxNewTokens: 40,
      onText: () => {
        if (++pieces === 3) throw new Error('consumer bug');
      },
    });
    await expect(faulty).rejects.toMatchObject({ code: 'request_failed' });
    for (const result of await Promise.all(innocent)) expect(result.completionTokens).toBe(40);
  });

  it('starts a live prompt before a long simulation prompt finishes prefilling', async () => {
    events.length = 0;
    const simulation = engine.generate({ prompt: longPrompt(300), maxNewTokens: 4, priority: 'simulation' }).then(() => events.push('simulation done'));
    while (!events.includes('prefill:1')) await new Promise((resolve) => setTimeout(resolve, 1));
    const live = await engine.generate({ prompt: shortPrompt, maxNewTokens: 4, priority: 'live' });
    events.push('live done');
    await simulation;
    expect(live.completionTokens).toBe(4);
    expect(events.indexOf('live done')).toBeLessThan(events.indexOf('simulation done'));
  });

  it('gives a long prompt the same text alone and beside others', { timeout: 60_000 }, async () => {
    const fp32 = await Engine.load({ modelDir: defaultModelDir, graph: 'model.step.onnx', maxContextTokens: 8192 });
    try {
      const prompt = longPrompt(90);
      const alone = await fp32.generate({ prompt, maxNewTokens: 100 });
      const together = await Promise.all([fp32.generate({ prompt, maxNewTokens: 100 }), fp32.generate({ prompt: longPrompt(120), maxNewTokens: 60 }), fp32.generate({ prompt: shortPrompt, maxNewTokens: 30 })]);
      expect(together[0]!.text).toBe(alone.text);
    } finally {
      await fp32.close();
    }
  });

  it('streams no text past a stop string', async () => {
    let streamed = '';
    const result = await engine.generate({ prompt: shortPrompt, maxNewTokens: 60, stop: ['calm'], onText: (delta) => (streamed += delta) });
    expect(result.finishReason).toBe('stop');
    expect(streamed).toBe(result.text);
    expect(streamed).not.toContain('calm');
  });
});

describe('Engine KV budget', () => {
  it('rejects a request larger than the budget and queues one that must wait', async () => {
    const tokens = engine.tokenizer.encode(shortPrompt).length + 40;
    const oneRequest = Math.ceil(tokens / pageTokens) * pageTokens * bytesPerToken(engine.shape);
    // The budget covers the slot buffers at their largest plus one request's pages.
    const slotBuffers = engine.stats().batchBufferReserveBytes;
    const budgeted = await Engine.load({ modelDir: defaultModelDir, maxBatchSize: 8, stopAtEndToken: false, kvBudgetBytes: slotBuffers + oneRequest });
    try {
      await expect(budgeted.generate({ prompt: shortPrompt, maxNewTokens: 200 })).rejects.toMatchObject({ code: 'kv_budget_exceeded' });
      let peakReserved = 0;
      let peakRunning = 0;
      const watch = () => {
        const stats = budgeted.stats();
        peakReserved = Math.max(peakReserved, stats.kvReservedBytes);
        peakRunning = Math.max(peakRunning, stats.running);
      };
      const results = await Promise.all([0, 1, 2].map(() => budgeted.generate({ prompt: shortPrompt, maxNewTokens: 40, onText: watch })));
      expect(results.map((r) => r.completionTokens)).toEqual([40, 40, 40]);
      expect(peakReserved).toBeLessThanOrEqual(oneRequest);
      expect(peakRunning).toBe(1);
    } finally {
      await budgeted.close();
    }
  });

  it('sets the slot buffers aside at their largest', async () => {
    const reserve = engine.stats().batchBufferReserveBytes;
    await expect(Engine.load({ modelDir: defaultModelDir, maxBatchSize: 8, kvBudgetBytes: reserve })).rejects.toMatchObject({ code: 'invalid_request' });
    await expect(Engine.load({ modelDir: defaultModelDir, maxBatchSize: 16, kvBudgetBytes: reserve + 1024 ** 2 })).rejects.toMatchObject({ code: 'invalid_request' });

    // A dense row just short of the trained positions gives the longest layout.
    const maxPositions = engine.model.maxContextTokens;
    const long = engine.tokenizer.decode(Array.from({ length: maxPositions - 2 * 32 - 8 }, (_, i) => 100 + (i % 500)));
    await Promise.all([engine.generate({ prompt: long, maxNewTokens: 32 }), engine.generate({ prompt: shortPrompt, maxNewTokens: 8 })]);
    const stats = engine.stats();
    expect(stats.batchBufferBytes).toBeGreaterThan(reserve / 2);
    expect(stats.batchBufferBytes).toBeLessThanOrEqual(reserve);
  });
});
