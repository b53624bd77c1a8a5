/**
 * Scores a model on the held-out split through the real engine: the share of turns that parse
 * and validate, and intent, action and entity (slot) accuracy per role.
 *
 *   npx tsx training/eval.ts --model-dir models/sanfang-moe-v0 --heldout training/out/corpus/heldout.text.jsonl
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { parseTurn } from '../agents/parse.ts';
import { replySlots, type Role, type Turn } from '../agents/turn.ts';
import { Engine } from '../engine/engine.ts';

const program = new Command()
  .option('--model-dir <dir>', 'model folder', 'models/sanfang-moe-v0')
  .option('--heldout <file>', 'held-out examples written by the corpus generator', 'training/out/corpus/heldout.text.jsonl')
  .option('--limit <n>', 'examples to score at most', '800')
  .option('--concurrency <n>', 'requests in flight', '16')
  .option('--out <file>', 'write the metrics as JSON here')
  .parse();
const options = program.opts<{ modelDir: string; heldout: string; limit: string; concurrency: string; out?: string }>();

interface HeldOutExample {
  role: Role;
  prompt: string;
  completion: string;
  turn: Turn;
}

const examples: HeldOutExample[] = readFileSync(options.heldout, 'utf8')
  .trim()
  .split('\n')
  .slice(0, Number(options.limit))
  .map((line) => JSON.parse(line));

// Every slot gets a placeholder value, so a reply validates whenever its slots are known names.
const slots = Object.fromEntries(replySlots.map((slot) => [slot, 1]));

interface Tally {
  turns: number;
  valid: number;
  intent: number;
  action: number;
  slotsCorrect: number;
  slotTurns: number;
}
const tallies = new Map<string, Tally>();
const tally = (key: string) => {
  let entry = tallies.get(key);
  if (!entry) tallies.set(key, (entry = { turns: 0, valid: 0, intent: 0, action: 0, slotsCorrect: 0, slotTurns: 0 }));
  return entry;
};
const latencies: number[] = [];

const engine = await Engine.load({ modelDir: options.modelDir, maxBatchSize: Number(options.concurrency) });
const started = performance.now();
let next = 0;
async function worker(): Promise<void> {
  while (next < examples.length) {
    const example = examples[next++]!;
    const result = await engine.generate({ prompt: example.prompt, maxNewTokens: 160 });
    latencies.push(result.totalMs);
    const lastPartyMessage = [...example.prompt.matchAll(/<\|(?:customer|rider)\|>([^\n]*)/g)].at(-1)?.[1];
    const parsed = parseTurn(result.text, example.role, { slots, lastPartyMessage, truncated: result.finishReason === 'length' });
    for (const entry of [tally(example.role), tally('all')]) {
      entry.turns++;
      if (!parsed.ok) continue;
      entry.valid++;
      if (parsed.turn.intent === example.turn.intent) entry.intent++;
      if (parsed.turn.action === example.turn.action) entry.action++;
      if (Object.keys(example.turn.entities).length > 0) {
        entry.slotTurns++;
        if (JSON.stringify(parsed.turn.entities) === JSON.stringify(example.turn.entities)) entry.slotsCorrect++;
      }
    }
  }
}
await Promise.all(Array.from({ length: Number(options.concurrency) }, worker));
const elapsedS = (performance.now() - started) / 1000;
await engine.close();

const ratio = (a: number, b: number) => (b === 0 ? null : Math.round((1000 * a) / b) / 1000);
const metrics = Object.fromEntries(
  [...tallies].map(([key, t]) => [
    key,
    {
      turns: t.turns,
      validRate: ratio(t.valid, t.turns),
      intentAccuracy: ratio(t.intent, t.turns),
      actionAccuracy: ratio(t.action, t.turns),
      slotAccuracy: ratio(t.slotsCorrect, t.slotTurns),
      slotTurns: t.slotTurns,
    },
  ]),
);
latencies.sort((a, b) => a - b);
const report = {
  modelDir: options.modelDir,
  examples: examples.length,
  metrics,
  medianRequestMs: Math.round(latencies[Math.floor(latencies.length / 2)] ?? 0),
  elapsedS: Math.round(elapsedS * 10) / 10,
};
console.log(JSON.stringify(report, null, 2));
if (options.out) writeFileSync(options.out, JSON.stringify(report, null, 2) + '\n');
