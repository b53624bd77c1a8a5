import { describe, expect, it } from 'vitest';
import { runAgentTurn } from '../../agents/agent.ts';
import type { GenerateRequest, GenerateResult, TextGenerator } from '../../engine/engine.ts';
import { EngineError, EngineOverloaded } from '../../engine/errors.ts';

const validTurn = JSON.stringify({ intent: 'greeting', emotion: 'calm', entities: {}, action: 'none', reply: '您好' });
const input = { role: 'user_agent' as const, locale: 'zh' as const, facts: { order: 'none' }, transcript: [{ speaker: 'customer' as const, text: '你好' }] };

/** An engine stand-in that returns `text` after `delayMs`, honouring the request's AbortSignal. */
function slowEngine(text: string, delayMs: number, seen: { aborted?: boolean } = {}): TextGenerator {
  return {
    generate: (request: GenerateRequest) =>
      new Promise<GenerateResult>((resolve, reject) => {
        const timer = setTimeout(() => resolve({ text, promptTokens: 1, completionTokens: 1, finishReason: 'stop', queueMs: 0, firstTokenMs: 0, totalMs: delayMs }), delayMs);
        request.signal?.addEventListener('abort', () => {
          clearTimeout(timer);
          seen.aborted = true;
          reject(new EngineError('aborted', 'aborted'));
        });
      }),
  };
}

describe('runAgentTurn', () => {
  it('returns a validated turn', async () => {
    const result = await runAgentTurn({ engine: slowEngine(validTurn, 1), turnTimeoutMs: 1_000 }, input);
    expect(result.status).toBe('ok');
    if (result.status === 'ok') expect(result.reply).toBe('您好');
  });

  it('falls back on invalid output', async () => {
    const result = await runAgentTurn({ engine: slowEngine('您好！', 1), turnTimeoutMs: 1_000 }, input);
    expect(result).toMatchObject({ status: 'fallback', reason: 'not_json', raw: '您好！' });
  });

  it('times out and aborts the engine call', async () => {
    const seen: { aborted?: boolean } = {};
    const result = await runAgentTurn({ engine: slowEngine(validTurn, 5_000, seen), turnTimeoutMs: 30 }, input);
    expect(result).toMatchObject({ status: 'fallback', reason: 'timeout' });
    expect(seen.aborted).toBe(true);
  });

  it('maps an overloaded engine', async () => {
    const engine: TextGenerator = { generate: async () => Promise.reject(new EngineOverloaded(4, 4)) };
    const result = await runAgentTurn({ engine, turnTimeoutMs: 1_000 }, input);
    expect(result).toMatchObject({ status: 'fallback', reason: 'overloaded' });
  });

  it('reports a barge-in as aborted', async () => {
    const seen: { aborted?: boolean } = {};
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 20);
    const result = await runAgentTurn({ engine: slowEngine(validTurn, 5_000, seen), turnTimeoutMs: 10_000 }, { ...input, signal: controller.signal });
    expect(result.status).toBe('aborted');
    expect(seen.aborted).toBe(true);
  });

  it('calls the observer once per turn', async () => {
    const outcomes: string[] = [];
    await runAgentTurn({ engine: slowEngine(validTurn, 1), turnTimeoutMs: 1_000, observe: (role, result) => outcomes.push(`${role}:${result.status}`) }, input);
    expect(outcomes).toEqual(['user_agent:ok']);
  });
});
