import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Engine } from '../../engine/engine.ts';
import { z } from 'zod';
import { renderPrompt } from '../../agents/prompt.ts';
import { turnSchemaFor } from '../../agents/turn.ts';
import { defaultModelDir } from '../support/model.ts';

const prompts = [
  renderPrompt({ role: 'user_agent', locale: 'zh', facts: { order: 'none' }, transcript: [{ speaker: 'customer', text: '我的外卖怎么还没到？' }] }),
  renderPrompt({ role: 'rider_agent', locale: 'zh', facts: { task: 'ask_eta', asked: 0 }, transcript: [] }),
  renderPrompt({ role: 'sim_rider', locale: 'zh', facts: { eta: 12, situation: 'normal' }, transcript: [{ speaker: 'agent', text: '请问多久能到？' }] }),
  renderPrompt({
    role: 'user_agent',
    locale: 'zh',
    facts: { order: 'delivering', eta: 9, late: 25, comp: 'due' },
    transcript: [
      { speaker: 'customer', text: '外卖到哪了，我都等了一个小时了' },
      { speaker: 'agent', text: '我这就帮您联系骑手问一下，请稍候。' },
    ],
  }),
];

let engine: Engine;

beforeAll(async () => {
  // The fp32 step graph, so that its greedy text can equal the standard graph's.
  engine = await Engine.load({ modelDir: defaultModelDir, maxBatchSize: 8, maxQueuedRequests: 8, graph: 'model.step.onnx' });
});

afterAll(async () => {
  await engine.close();
});

describe('Engine generation', () => {
  it('decodes greedily and deterministically', async () => {
    const first = await engine.generate({ prompt: prompts[0]!, maxNewTokens: 40 });
    const second = await engine.generate({ prompt: prompts[0]!, maxNewTokens: 40 });
    expect(first.text.length).toBeGreaterThan(0);
    expect(second.text).toBe(first.text);
    expect(first.completionTokens).toBeGreaterThan(0);
  });

  it('gives batched requests the sequential result', async () => {
    const sequential: string[] = [];
    for (const prompt of prompts) sequential.push((await engine.generate({ prompt, maxNewTokens: 60 })).text);
    const batched = await Promise.all(prompts.map((prompt) => engine.generate({ prompt, maxNewTokens: 60 })));
    expect(batched.map((r) => r.text)).toEqual(sequential);
  });

  it('prefills similar prompts together', async () => {
    const similar = [3, 5, 7, 9, 11].map((eta) =>
      renderPrompt({ role: 'sim_rider', locale: 'zh', facts: { eta, situation: 'normal' }, transcript: [{ speaker: 'agent', text: '请问多久能到？' }] }),
    );
    const sequential: string[] = [];
    for (const prompt of similar) sequential.push((await engine.generate({ prompt, maxNewTokens: 40 })).text);

    const before = engine.stats().prefillCalls;
    const batched = await Promise.all(similar.map((prompt) => engine.generate({ prompt, maxNewTokens: 40 })));
    expect(batched.map((r) => r.text)).toEqual(sequential);
    // Requests queued together share prefill calls instead of taking one call each.
    expect(engine.stats().prefillCalls - before).toBeLessThan(similar.length);
  });

  it('streams text that adds up to the result', async () => {
    const pieces: string[] = [];
    const result = await engine.generate({ prompt: prompts[3]!, maxNewTokens: 60, onText: (delta) => pieces.push(delta) });
    expect(pieces.length).toBeGreaterThan(1);
    expect(pieces.join('')).toBe(result.text);
  });

  it('stops at maxNewTokens', async () => {
    const result = await engine.generate({ prompt: prompts[3]!, maxNewTokens: 3 });
    expect(result.completionTokens).toBe(3);
    expect(result.finishReason).toBe('length');
  });

  it('stops at a stop string', async () => {
    const result = await engine.generate({ prompt: prompts[0]!, maxNewTokens: 60, stop: ['"emotion"'] });
    expect(result.finishReason).toBe('stop');
    expect(result.text).not.toContain('"emotion"');
  });

  it('decodes past the end token when told to', async () => {
    const unstopped = await Engine.load({ modelDir: defaultModelDir, stopAtEndToken: false });
    const stopped = await engine.generate({ prompt: prompts[1]!, maxNewTokens: 120 });
    const result = await unstopped.generate({ prompt: prompts[1]!, maxNewTokens: 120 });
    await unstopped.close();
    expect(stopped.completionTokens).toBeLessThan(120);
    expect(result.completionTokens).toBe(120);
  });

  it('repeats a seeded sample', async () => {
    const sampling = { temperature: 1, topP: 0.95, seed: 42 };
    const first = await engine.generate({ prompt: prompts[2]!, maxNewTokens: 30, sampling });
    const second = await engine.generate({ prompt: prompts[2]!, maxNewTokens: 30, sampling });
    expect(second.text).toBe(first.text);
  });
});

describe('Engine graph layouts', () => {
  it('serves the standard decoder layout with the same greedy text', async () => {
    expect(engine.graphPath).toMatch(/model\.step\.onnx$/);
    const standard = await Engine.load({ modelDir: defaultModelDir, graph: 'model.onnx' });
    try {
      for (const prompt of prompts) {
        const [fromStep, fromStandard] = await Promise.all([engine.generate({ prompt, maxNewTokens: 60 }), standard.generate({ prompt, maxNewTokens: 60 })]);
        expect(fromStandard.text).toBe(fromStep.text);
      }
      expect(standard.stats().expertLoad).toEqual([]);
      expect(engine.stats().expertLoad.flat().reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    } finally {
      await standard.close();
    }
  });
});

describe('Engine expert load', () => {
  it('leaves padding out of grouped prefill counts', async () => {
    const config = JSON.parse(readFileSync(join(defaultModelDir, 'config.json'), 'utf8')) as { num_experts_per_tok: number };
    const counted = await Engine.load({ modelDir: defaultModelDir, stopAtEndToken: false });
    try {
      // The first request starts the loop at once. The next two, of different lengths, queue
      // behind its prefill and then share one left-padded call.
      const pair = ['我的外卖怎么还没到？', '我的外卖怎么还没到？都等了半个小时了'].map((text) =>
        renderPrompt({ role: 'user_agent', locale: 'zh', facts: { order: 'none' }, transcript: [{ speaker: 'customer', text }] }),
      );
      const lengths = pair.map((prompt) => counted.tokenizer.encode(prompt).length);
      expect(lengths[0]).not.toBe(lengths[1]);
      const results = await Promise.all([prompts[1]!, ...pair].map((prompt) => counted.generate({ prompt, maxNewTokens: 5 })));
      expect(counted.stats().prefillCalls).toBe(2);

      // Each prompt token goes through prefill and each new token but the last through a decode step.
      const tokens = results.reduce((sum, result) => sum + result.promptTokens + result.completionTokens - 1, 0);
      for (const layer of counted.stats().expertLoad) {
        expect(layer.reduce((a, b) => a + b, 0)).toBe(tokens * config.num_experts_per_tok);
      }
    } finally {
      await counted.close();
    }
  });
});

describe('Engine constrained decoding', () => {
  it('leaves output that already fits the schema unchanged', async () => {
    for (const prompt of prompts.slice(0, 2)) {
      const free = await engine.generate({ prompt, maxNewTokens: 160 });
      const role = prompt.includes('rider_agent') ? 'rider_agent' : 'user_agent';
      const constrained = await engine.generate({ prompt, maxNewTokens: 160, responseSchema: turnSchemaFor(role) });
      expect(turnSchemaFor(role).safeParse(JSON.parse(constrained.text)).success).toBe(true);
      expect(constrained.text).toBe(free.text);
    }
  });

  it('forces output the model would never write into the schema', async () => {
    const schema = z.object({ approved: z.boolean(), minutes: z.number().int().min(0).max(90), note: z.string().max(12) }).strict();
    const result = await engine.generate({ prompt: prompts[0]!, maxNewTokens: 80, responseSchema: schema });
    expect(result.finishReason).toBe('stop');
    expect(schema.safeParse(JSON.parse(result.text)).success).toBe(true);
  });

  it('closes a constrained turn at the token limit', async () => {
    const schema = turnSchemaFor('user_agent');
    for (const maxNewTokens of [24, 31, 40]) {
      const result = await engine.generate({ prompt: prompts[3]!, maxNewTokens, responseSchema: schema, sampling: { temperature: 1, seed: maxNewTokens } });
      expect(result.completionTokens).toBeLessThanOrEqual(maxNewTokens);
      expect(schema.safeParse(JSON.parse(result.text)).success, result.text).toBe(true);
      expect(result.finishReason).toBe('length');
    }
  });

  it('ends a value that could go on at the token limit', async () => {
    // Seeds 1015 and 30 once ended these values at "0." and "10"; the others widen the search.
    const cases = [
      { schema: z.number(), seeds: [1015, ...Array.from({ length: 20 }, (_, i) => i)] },
      { schema: z.union([z.literal(1), z.literal(12), z.literal(10.5)]), seeds: [30, ...Array.from({ length: 60 }, (_, i) => i)] },
      { schema: z.number().int().min(-500).max(5000), seeds: Array.from({ length: 20 }, (_, i) => i) },
    ];
    for (const { schema, seeds } of cases) {
      for (const seed of seeds) {
        const result = await engine.generate({ prompt: 'Pi is 3.14159, the price is 12.5 and', maxNewTokens: 2, responseSchema: schema, sampling: { temperature: 5, topP: 1, seed } });
        expect(schema.safeParse(JSON.parse(result.text)).success, `${result.text} (seed ${seed})`).toBe(true);
      }
    }
  });

  it('rejects a token limit below the shortest valid turn', async () => {
    await expect(engine.generate({ prompt: prompts[0]!, maxNewTokens: 3, responseSchema: turnSchemaFor('user_agent') })).rejects.toMatchObject({ code: 'invalid_request' });
  });

  it('rejects stop strings with a constraint', async () => {
    await expect(engine.generate({ prompt: prompts[0]!, stop: [','], responseSchema: turnSchemaFor('user_agent') })).rejects.toMatchObject({ code: 'invalid_request' });
  });

  it('rejects a huge prompt before encoding it', async () => {
    const encode = vi.spyOn(engine.tokenizer, 'encode');
    await expect(engine.generate({ prompt: '外卖'.repeat(400_000), maxNewTokens: 1 })).rejects.toMatchObject({ code: 'context_overflow' });
    expect(encode).not.toHaveBeenCalled();
    encode.mockRestore();
  });

  it('rejects a schema the grammar cannot express', async () => {
    await expect(engine.generate({ prompt: prompts[0]!, responseSchema: z.object({ mail: z.email() }) })).rejects.toMatchObject({ code: 'invalid_request' });
  });
});

describe('Engine cancellation', () => {
  it('rejects a request aborted before start', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(engine.generate({ prompt: prompts[0]!, signal: controller.signal })).rejects.toMatchObject({ code: 'aborted' });
  });

  it('aborts during decode and keeps serving', async () => {
    const controller = new AbortController();
    let pieces = 0;
    const aborted = engine.generate({
      prompt: prompts[3]!,
      maxNewTokens: 200,
      onText: () => {
        if (++pieces === 3) controller.abort();
      },
      signal: controller.signal,
    });
    const other = engine.generate({ prompt: prompts[1]!, maxNewTokens: 40 });
    await expect(aborted).rejects.toMatchObject({ code: 'aborted' });
    expect((await other).text.length).toBeGreaterThan(0);
    expect(engine.stats().running).toBe(0);
  });

  it('counts a request aborted from its last onText once', async () => {
    const before = engine.stats();
    const controller = new AbortController();
    const deltas: string[] = [];
    const outcome = engine.generate({
      prompt: prompts[0]!,
      maxNewTokens: 1,
      signal: controller.signal,
      onText: (delta) => {
        deltas.push(delta);
        controller.abort();
      },
    });
    await expect(outcome).rejects.toMatchObject({ code: 'aborted' });
    const after = engine.stats();
    expect(after.aborted - before.aborted).toBe(1);
    expect(after.completed - before.completed).toBe(0);
    expect(deltas.length).toBeLessThanOrEqual(1);
  });

  it('survives a storm of aborts', async () => {
    const requests = Array.from({ length: 8 }, (_, i) => {
      const controller = new AbortController();
      setTimeout(() => controller.abort(), i * 3);
      return engine.generate({ prompt: prompts[i % prompts.length]!, maxNewTokens: 100, signal: controller.signal }).catch((error) => error);
    });
    await Promise.all(requests);
    const after = await engine.generate({ prompt: prompts[0]!, maxNewTokens: 20 });
    expect(after.completionTokens).toBeGreaterThan(0);
    expect(engine.stats()).toMatchObject({ queued: 0, running: 0, kvReservedBytes: 0, kvBytes: 0 });
  });
});

describe('Engine bad input', () => {
  it.each([
    ['maxNewTokens of 0', { maxNewTokens: 0 }],
    ['huge maxNewTokens', { maxNewTokens: 1_000_000 }],
    ['negative temperature', { sampling: { temperature: -1 } }],
    ['topP above 1', { sampling: { temperature: 1, topP: 1.5 } }],
    ['empty prompt', { prompt: '' }],
  ])('rejects %s', async (_name, overrides) => {
    await expect(engine.generate({ prompt: prompts[0]!, ...overrides })).rejects.toMatchObject({ code: 'invalid_request' });
  });

  it('rejects work past the queue bound', async () => {
    const requests = Array.from({ length: 20 }, () => engine.generate({ prompt: prompts[1]!, maxNewTokens: 20 }).catch((error) => error));
    const results = await Promise.all(requests);
    const overloaded = results.filter((r) => r instanceof Error && (r as { code?: string }).code === 'overloaded');
    expect(overloaded.length).toBeGreaterThan(0);
    expect(results.length - overloaded.length).toBeGreaterThanOrEqual(8);
    expect(engine.stats().rejected).toBeGreaterThanOrEqual(overloaded.length);
  });
});

describe('Engine.load', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sanfang-model-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names a missing model file', async () => {
    const broken = join(dir, 'missing');
    cpSync(defaultModelDir, broken, { recursive: true });
    unlinkSync(join(broken, 'tokenizer.json'));
    await expect(Engine.load({ modelDir: broken })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('tokenizer.json') });
  });

  it('names a corrupt ONNX file', async () => {
    const broken = join(dir, 'corrupt');
    cpSync(defaultModelDir, broken, { recursive: true });
    writeFileSync(join(broken, 'onnx', 'model.onnx'), 'not a model');
    await expect(Engine.load({ modelDir: broken })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('model.onnx') });
  });

  it('names an invalid config', async () => {
    const broken = join(dir, 'config');
    cpSync(defaultModelDir, broken, { recursive: true });
    copyFileSync(join(broken, 'tokenizer_config.json'), join(broken, 'config.json'));
    await expect(Engine.load({ modelDir: broken })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('config.json') });
  });

  it('names a corrupt step graph', async () => {
    const broken = join(dir, 'step');
    cpSync(defaultModelDir, broken, { recursive: true });
    writeFileSync(join(broken, 'onnx', 'model.step.onnx'), 'not a model');
    await expect(Engine.load({ modelDir: broken, graph: 'model.step.onnx' })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('model.step.onnx') });
  });

  it('rejects a step graph exported from other weights', async () => {
    const broken = join(dir, 'mismatch');
    cpSync(defaultModelDir, broken, { recursive: true });
    const graph = readFileSync(join(broken, 'onnx', 'model.step.onnx'));
    const at = graph.indexOf('sanfang.weights_sha256');
    const digit = graph.indexOf(Buffer.from(/[0-9a-f]{64}/.exec(graph.subarray(at, at + 200).toString('latin1'))![0]));
    graph[digit] = graph[digit] === 0x30 ? 0x31 : 0x30;
    writeFileSync(join(broken, 'onnx', 'model.step.onnx'), graph);
    await expect(Engine.load({ modelDir: broken, graph: 'model.step.onnx' })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('other weights') });
  });

  it('names a missing weights file of the 8-bit graph', async () => {
    const broken = join(dir, 'no-data');
    cpSync(defaultModelDir, broken, { recursive: true });
    unlinkSync(join(broken, 'onnx', 'model.step.q8.data'));
    await expect(Engine.load({ modelDir: broken })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('model.step.q8.data') });
  });

  it('names a weights file of the 8-bit graph that cannot be read', async () => {
    const broken = join(dir, 'data-folder');
    cpSync(defaultModelDir, broken, { recursive: true });
    unlinkSync(join(broken, 'onnx', 'model.step.q8.data'));
    mkdirSync(join(broken, 'onnx', 'model.step.q8.data'));
    await expect(Engine.load({ modelDir: broken })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('model.step.q8.data') });
  });

  it('rejects a weights file named outside the folder', async () => {
    const broken = join(dir, 'data-path');
    cpSync(defaultModelDir, broken, { recursive: true });
    const graphPath = join(broken, 'onnx', 'model.step.q8.onnx');
    const graph = readFileSync(graphPath);
    // The metadata value follows its key and two bytes of tag and length. The new name has the
    // same length, so the entry stays well formed.
    const at = graph.indexOf('sanfang.data_file') + 'sanfang.data_file'.length + 2;
    expect(graph.toString('latin1', at, at + 18)).toBe('model.step.q8.data');
    graph.write('../model.step.q8.d', at, 'latin1');
    writeFileSync(graphPath, graph);
    await expect(Engine.load({ modelDir: broken })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('outside its folder') });
  });

  it('rejects a changed weights file of the 8-bit graph', async () => {
    const broken = join(dir, 'changed-data');
    cpSync(defaultModelDir, broken, { recursive: true });
    const data = readFileSync(join(broken, 'onnx', 'model.step.q8.data'));
    const middle = data.length >> 1;
    data[middle] = data[middle]! ^ 0xff;
    writeFileSync(join(broken, 'onnx', 'model.step.q8.data'), data);
    await expect(Engine.load({ modelDir: broken })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('quantize the graph again') });
  });

  it.each([
    ['maxBatchSize 0', { maxBatchSize: 0 }],
    ['maxQueuedRequests NaN', { maxQueuedRequests: Number.NaN }],
    ['negative sinkTokens', { sparseAttention: { sinkTokens: -32 } }],
    ['NaN windowTokens', { sparseAttention: { windowTokens: Number.NaN } }],
  ])('rejects engine options with %s', async (_name, options) => {
    await expect(Engine.load({ modelDir: defaultModelDir, ...options })).rejects.toMatchObject({ code: 'invalid_request' });
  });

  it('closes twice without error', async () => {
    const closing = await Engine.load({ modelDir: defaultModelDir });
    await closing.close();
    await expect(closing.close()).resolves.toBeUndefined();
  });

  it.each([
    ['vocab_size', 2000, 'model.step.onnx'],
    ['vocab_size', 2000, 'model.onnx'],
    ['num_hidden_layers', 5, 'model.step.onnx'],
    ['num_key_value_heads', 4, 'model.step.q8.onnx'],
  ])('rejects a config.json whose %s (%i) does not match %s', async (key, value, graph) => {
    const broken = join(dir, `config-${key}-${graph}`);
    cpSync(defaultModelDir, broken, { recursive: true });
    const config = JSON.parse(readFileSync(join(broken, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(broken, 'config.json'), JSON.stringify({ ...config, [key]: value }));
    await expect(Engine.load({ modelDir: broken, graph })).rejects.toMatchObject({ code: 'model_load_failed', message: expect.stringContaining('config.json does not match') });
  });

  it('loads model.onnx past a broken step graph it was not asked for', async () => {
    const broken = join(dir, 'unused-step');
    cpSync(defaultModelDir, broken, { recursive: true });
    writeFileSync(join(broken, 'onnx', 'model.step.q8.onnx'), 'not a model');
    const standard = await Engine.load({ modelDir: broken, graph: 'model.onnx' });
    await standard.close();
  });

  it('rejects a missing folder', async () => {
    await expect(Engine.load({ modelDir: join(dir, 'nowhere') })).rejects.toMatchObject({ code: 'model_load_failed' });
  });
});
