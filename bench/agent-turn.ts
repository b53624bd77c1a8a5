/**
 * `npm run bench`: the time of one agent turn (prompt → validated structured turn) through the
 * real engine and model, alone and with 16 turns in flight, measured side by side in one run.
 * Prints medians and the batching ratio, and writes JSON under bench/results/.
 */
import { execSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { Command } from 'commander';
import { runAgentTurn, type AgentTurnInput } from '../agents/agent.ts';
import { Engine } from '../engine/engine.ts';

const program = new Command()
  .option('--model-dir <dir>', 'model folder', 'models/sanfang-moe-v0')
  .option('--rounds <n>', 'turns per measurement', '48')
  .parse();
const options = program.opts<{ modelDir: string; rounds: string }>();
const rounds = Number(options.rounds);

const turns: AgentTurnInput[] = [
  { role: 'user_agent', locale: 'zh', facts: { order: 'none' }, transcript: [{ speaker: 'customer', text: '我的外卖怎么还没到？都等了40分钟了' }] },
  {
    role: 'user_agent',
    locale: 'zh',
    facts: { order: 'delivering', eta: 'unknown' },
    transcript: [{ speaker: 'customer', text: '骑手到哪了，急死了' }],
  },
  {
    role: 'user_agent',
    locale: 'zh',
    facts: { order: 'delivering', eta: 12, late: 22, comp: 'due' },
    transcript: [
      { speaker: 'customer', text: '外卖怎么还没到' },
      { speaker: 'agent', text: '您的订单正在配送途中，我这就帮您联系骑手问一下，请稍候。' },
    ],
    slots: { eta_min: 12, late_min: 22, coupon_yuan: 5, order_tail: '0001' },
  },
  { role: 'rider_agent', locale: 'zh', facts: { task: 'ask_eta', asked: 1 }, transcript: [{ speaker: 'agent', text: '请问多久能到？' }, { speaker: 'rider', text: '路上有点堵，大概15分钟' }] },
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0;
}

const engine = await Engine.load({ modelDir: options.modelDir, maxBatchSize: 16 });
const agent = { engine, turnTimeoutMs: 60_000 };
const slotsFor = (turn: AgentTurnInput) => turn.slots ?? { eta_min: 1, late_min: 1, coupon_yuan: 1, order_tail: '0001' };

// Warm up the session so the first measured turn does not pay for allocation.
for (const turn of turns) await runAgentTurn(agent, { ...turn, slots: slotsFor(turn) });

async function measure(concurrency: number) {
  const latencies: number[] = [];
  let valid = 0;
  let tokens = 0;
  const tokensBefore = engine.stats().generatedTokens;
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < rounds) {
        const turn = turns[next++ % turns.length]!;
        const result = await runAgentTurn(agent, { ...turn, slots: slotsFor(turn) });
        latencies.push(result.latencyMs);
        if (result.status === 'ok') valid++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  tokens = engine.stats().generatedTokens - tokensBefore;
  return {
    concurrency,
    turns: rounds,
    validTurns: valid,
    medianTurnMs: Math.round(median(latencies)),
    p95TurnMs: Math.round(percentile(latencies, 0.95)),
    turnsPerSecond: Math.round((rounds / seconds) * 10) / 10,
    tokensPerSecond: Math.round(tokens / seconds),
  };
}

const alone = await measure(1);
const batched = await measure(16);
await engine.close();

let commit = 'unknown';
try {
  commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim();
} catch {
  // not a git checkout
}
const report = {
  benchmark: 'agent-turn',
  commit,
  machine: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}`,
  modelDir: options.modelDir,
  alone,
  batched,
  batchedThroughputRatio: Math.round((batched.tokensPerSecond / alone.tokensPerSecond) * 100) / 100,
};
mkdirSync('bench/results', { recursive: true });
const file = `bench/results/agent-turn-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
writeFileSync(file, JSON.stringify(report, null, 2) + '\n');

console.log(`machine: ${report.machine}; commit ${commit}`);
console.log('| in flight | median turn | p95 turn | turns/s | tokens/s | valid |');
console.log('|---|---|---|---|---|---|');
for (const row of [alone, batched]) {
  console.log(`| ${row.concurrency} | ${row.medianTurnMs} ms | ${row.p95TurnMs} ms | ${row.turnsPerSecond} | ${row.tokensPerSecond} | ${row.validTurns}/${row.turns} |`);
}
console.log(`batched/alone tokens per second: ${report.batchedThroughputRatio}x`);
console.log(`wrote ${file}`);
