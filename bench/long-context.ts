/**
 * `npm run bench:long-context` measures what sparse attention costs in quality. Each case
 * states facts at the start of a long dialogue and requests the user-facing agent's turn at
 * the end. That turn is compared with the turn the engine writes when the same facts come with
 * a short dialogue. Four attention settings run: the engine default (sinks, window and chosen
 * pages), a small budget of sinks and window, and chosen pages without sinks, where the facts
 * must be found by page score. The fourth, a recent window alone, cannot reach the facts and
 * shows that the comparison can fail.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { Engine } from '../engine/engine.ts';
import type { SparseAttentionOptions } from '../engine/sparse.ts';
import { factCases, longDialoguePrompt } from './long-dialogue.ts';

const program = new Command()
  .option('--model-dir <dir>', 'model folder', 'models/sanfang-moe-v0')
  .option('--contexts <list>', 'comma-separated context lengths in tokens', '8192,32768')
  .option('--threads <n>', 'ONNX Runtime intra-op threads', '1')
  .parse();
const cli = program.opts<{ modelDir: string; contexts: string; threads: string }>();
const contexts = cli.contexts.split(',').map(Number);
if (contexts.some((n) => !Number.isInteger(n) || n < 256)) throw new Error(`invalid --contexts ${cli.contexts}: expected integers of at least 256`);

const cases = factCases;

/**
 * The default model was trained on prompts of at most 8 transcript lines (~200 tokens). Given
 * more, it writes invalid turns, with dense attention too. So besides the engine default, the
 * settings give it a window of about the length it was trained on.
 */
const settings: Record<string, Partial<SparseAttentionOptions>> = {
  'engine default (sinks 64, pages 256, window 448)': {},
  'sinks 32, window 96': { sinkTokens: 32, selectedTokens: 0, windowTokens: 96 },
  'chosen page 32, window 96, no sinks': { sinkTokens: 0, selectedTokens: 32, windowTokens: 96 },
  'window 128 alone': { sinkTokens: 0, selectedTokens: 0, windowTokens: 128 },
};

interface Decision {
  action: string;
  intent: string;
}

function decision(text: string): Decision | null {
  try {
    const turn = JSON.parse(text) as Partial<Decision>;
    return typeof turn.action === 'string' && typeof turn.intent === 'string' ? { action: turn.action, intent: turn.intent } : null;
  } catch {
    return null;
  }
}

const rows: { setting: string; context: number; actionAgreement: string; intentAgreement: string; valid: string; secondsPerCase: number }[] = [];
const threads = Number(cli.threads);
const maxContext = Math.max(...contexts) + 256;

// References: the same facts with the tail of the same dialogue, about as long as the model's
// training prompts, attended densely.
const referenceTokens = 120;
const reference = await Engine.load({ modelDir: cli.modelDir, intraOpThreads: threads, maxContextTokens: maxContext });
const expected = await Promise.all(cases.map(async (facts, index) => decision((await reference.generate({ prompt: longDialoguePrompt(reference.tokenizer, facts, referenceTokens, index).prompt, maxNewTokens: 160 })).text)));
await reference.close();
console.log('short-context references:', expected.map((d) => (d ? `${d.intent}/${d.action}` : 'invalid')).join(', '));

for (const [name, sparseAttention] of Object.entries(settings)) {
  const engine = await Engine.load({ modelDir: cli.modelDir, intraOpThreads: threads, maxContextTokens: maxContext, sparseAttention, kvBudgetBytes: 8 * 1024 ** 3 });
  for (const context of contexts) {
    let actions = 0;
    let intents = 0;
    let valid = 0;
    const started = performance.now();
    for (const [index, facts] of cases.entries()) {
      const { prompt } = longDialoguePrompt(engine.tokenizer, facts, context, index);
      const got = decision((await engine.generate({ prompt, maxNewTokens: 160 })).text);
      if (got) valid++;
      if (got && got.action === expected[index]?.action) actions++;
      if (got && got.intent === expected[index]?.intent) intents++;
    }
    const row = {
      setting: name,
      context,
      actionAgreement: `${actions}/${cases.length}`,
      intentAgreement: `${intents}/${cases.length}`,
      valid: `${valid}/${cases.length}`,
      secondsPerCase: Math.round(((performance.now() - started) / 1000 / cases.length) * 10) / 10,
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  await engine.close();
}

mkdirSync('bench/results', { recursive: true });
const file = `bench/results/long-context-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
writeFileSync(file, JSON.stringify({ benchmark: 'long-context', cases, expected, rows }, null, 2) + '\n');
console.log(
  [
    '',
    '| attention | context tokens | same action as short context | same intent | valid turns | seconds per case |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.setting} | ${r.context} | ${r.actionAgreement} | ${r.intentAgreement} | ${r.valid} | ${r.secondsPerCase} |`),
    '',
    `wrote ${file}`,
  ].join('\n'),
);
