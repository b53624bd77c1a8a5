import { describe, expect, it } from 'vitest';
import { Engine } from '../../engine/engine.ts';
import type { SparseAttentionOptions } from '../../engine/sparse.ts';
import { factCases, longDialoguePrompt } from '../../bench/long-dialogue.ts';
import { defaultModelDir } from '../support/model.ts';

/** Facts stated once, at the start; only the first two make a coupon due. */
const cases = factCases;

const action = (text: string): string | undefined => {
  try {
    return (JSON.parse(text) as { action?: string }).action;
  } catch {
    return undefined;
  }
};

/** Actions the engine chooses for every case at `contextTokens`, under `sparseAttention`. */
async function actions(contextTokens: number, sparseAttention: Partial<SparseAttentionOptions>): Promise<(string | undefined)[]> {
  const engine = await Engine.load({ modelDir: defaultModelDir, sparseAttention, maxContextTokens: 16_384 });
  try {
    const chosen: (string | undefined)[] = [];
    for (const [index, facts] of cases.entries()) {
      const { prompt } = longDialoguePrompt(engine.tokenizer, facts, contextTokens, index);
      chosen.push(action((await engine.generate({ prompt, maxNewTokens: 160 })).text));
    }
    return chosen;
  } finally {
    await engine.close();
  }
}

// The default model was trained on prompts of up to ~200 tokens, so the attended budget here
// matches that length. bench/long-context.ts also reports the engine defaults.
describe('Sparse attention over a long dialogue', () => {
  it('uses facts stated 8K tokens earlier as the short dialogue does', { timeout: 120_000 }, async () => {
    const reference = await actions(120, {});
    expect(reference.slice(0, 2)).toEqual(['issue_coupon', 'issue_coupon']);

    const sinks = await actions(8192, { sinkTokens: 32, selectedTokens: 0, windowTokens: 96 });
    const agree = (got: (string | undefined)[]) => got.filter((a, i) => a === reference[i]).length;
    expect(agree(sinks)).toBeGreaterThanOrEqual(5);
    expect(sinks.slice(0, 2)).toEqual(['issue_coupon', 'issue_coupon']);

    // With the facts out of reach the agent cannot tell that a coupon is due.
    const windowAlone = await actions(8192, { sinkTokens: 0, selectedTokens: 0, windowTokens: 128 });
    expect(windowAlone.slice(0, 2)).not.toEqual(['issue_coupon', 'issue_coupon']);
    expect(agree(windowAlone)).toBeLessThan(agree(sinks));
  });
});
