/**
 * `npm run bench:engine` measures the shared engine in one run on one machine. It compares
 * throughput at several concurrency levels with the same requests served one at a time. It
 * compares 16 concurrent requests (by default) with transformers.js on the same weights and
 * checks that greedy outputs match. It also reports latency at that concurrency and the decode
 * cost per token at short and long context, prints Markdown tables and writes JSON under
 * bench/results/.
 */
import { execSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { cpus, loadavg } from 'node:os';
import { Command, Option } from 'commander';
import { renderPrompt, type Facts, type PromptInput, type TranscriptLine } from '../agents/prompt.ts';
import { Engine, type GenerateResult } from '../engine/engine.ts';
import type { TextTokenizer } from '../engine/tokenizer.ts';
import { longDialoguePrompt } from './long-dialogue.ts';
import { replaceReadmeBlock } from './readme.ts';
import { TransformersPeer, type PeerGeneration } from './peer-transformers.ts';

const program = new Command()
  .option('--model-dir <dir>', 'model folder', 'models/sanfang-moe-v0')
  .option('--levels <list>', 'comma-separated numbers of concurrent requests', '1,4,16,64')
  .option('--new-tokens <n>', 'new tokens generated per request', '64')
  .option('--repeats <n>', 'repeats per measurement; tables show medians', '5')
  .option('--threads <n>', 'ONNX Runtime intra-op threads for the engine and the peer', '1')
  .option('--peer-concurrency <n>', 'concurrent requests in the transformers.js comparison', '16')
  .option('--short-context <n>', 'context, in tokens, of the short decode-cost request', '960')
  .option('--long-context <n>', 'context, in tokens, of the long decode-cost request', '32700')
  .addOption(
    new Option('--end-token <mode>', 'ignore: decode past the end token so every request yields --new-tokens; stop: stop on it as agents do')
      .choices(['ignore', 'stop'])
      .default('ignore'),
  )
  .option('--graph <file>', "graph under the model's onnx/ folder for the throughput and context runs; 'auto' picks as the runtime does", 'auto')
  .option('--no-peer', 'skip transformers.js')
  .option('--no-readme', "leave the READMEs' benchmark tables alone (runs with other settings than the defaults, --threads apart, never write them)")
  .parse();

const cliOptions = program.opts<Record<string, string | boolean>>();
const readPositiveInteger = (name: string): number => {
  const value = Number(cliOptions[name]);
  if (!Number.isInteger(value) || value < 1) throw new Error(`invalid --${name} ${String(cliOptions[name])}: expected a positive integer`);
  return value;
};
const options = {
  modelDir: String(cliOptions.modelDir),
  levels: String(cliOptions.levels)
    .split(',')
    .map((item) => {
      const level = Number(item);
      if (!Number.isInteger(level) || level < 1) throw new Error(`invalid --levels entry "${item}": expected positive integers such as 1,4,16,64`);
      return level;
    }),
  newTokens: readPositiveInteger('newTokens'),
  repeats: readPositiveInteger('repeats'),
  threads: readPositiveInteger('threads'),
  peerConcurrency: readPositiveInteger('peerConcurrency'),
  shortContext: readPositiveInteger('shortContext'),
  longContext: readPositiveInteger('longContext'),
  stopAtEnd: cliOptions.endToken === 'stop',
  peer: cliOptions.peer !== false,
  readme: cliOptions.readme !== false,
  graph: String(cliOptions.graph),
};

// ---------------------------------------------------------------------------------------------
// Prompts: agent prompts in the training format, varied by role, facts and transcript.

const riderQuestions = ['您好，尾号{order_tail}的订单大概多久能送到？', '您好，请问尾号{order_tail}的订单现在到哪了？顾客在催了', '师傅您好，尾号{order_tail}这单还要多久？'];

const userTranscripts: TranscriptLine[][] = [
  [{ speaker: 'customer', text: '我的外卖怎么还没到？都等了{minutes}分钟了，在软件上催了好几次也没用' }],
  [{ speaker: 'customer', text: '骑手到哪了，急死了，地图上骑手的位置半天都不动，打电话也没人接' }],
  [
    { speaker: 'customer', text: '外卖怎么还没到' },
    { speaker: 'agent', text: '您的订单正在配送途中，我这就帮您联系骑手问一下，请稍候。' },
  ],
  [
    { speaker: 'customer', text: '超时{minutes}分钟了，能不能赔点？' },
    { speaker: 'agent', text: '非常抱歉让您久等了，我马上帮您查询订单状态。' },
    { speaker: 'customer', text: '快点吧，饭都要凉了' },
  ],
  [{ speaker: 'customer', text: '你好，我想问一下订单大概几点能送到，我一会儿要出门' }],
  [
    { speaker: 'customer', text: '能不能帮我催一下骑手，孩子还饿着呢' },
    { speaker: 'agent', text: '理解您的心情，我已经联系骑手了，请您再稍等几分钟。' },
    { speaker: 'customer', text: '都说了好几次稍等了，到底还要多久' },
  ],
  [
    { speaker: 'customer', text: '我十一点半下的单，页面写十二点十分送达，现在都十二点半了还在配送中' },
    { speaker: 'agent', text: '非常抱歉让您久等了，我马上帮您查询订单状态。' },
    { speaker: 'customer', text: '骑手电话打不通，我下午一点还要开会，你们给个准话' },
    { speaker: 'agent', text: '我已联系骑手，预计还需{minutes}分钟送达，给您带来不便非常抱歉。' },
    { speaker: 'customer', text: '超时这么久有没有补偿？' },
  ],
];

const riderReplies = ['路上有点堵，大概{minutes}分钟', '电梯坏了，我在爬楼，马上到', '已经送到了，放在门口了', '刚取到餐，商家出餐太慢了', '下雨路滑，骑得慢，{minutes}分钟左右'];

const simCustomerTranscripts: TranscriptLine[][] = [
  [
    { speaker: 'customer', text: '我点的外卖超时{minutes}分钟了还没到，怎么回事' },
    { speaker: 'agent', text: '非常抱歉，我这就帮您联系骑手确认位置，请稍候。' },
  ],
  [
    { speaker: 'customer', text: '订单一直显示配送中，能帮我看看吗' },
    { speaker: 'agent', text: '我已联系骑手，预计还需{minutes}分钟送达，给您带来不便非常抱歉。' },
  ],
];

const compensations = ['no', 'due', 'issued'] as const;
const situations = ['normal', 'traffic', 'near', 'rain'] as const;
const moods = ['calm', 'anxious', 'angry'] as const;

function fillPlaceholders(lines: readonly TranscriptLine[], minutes: number, orderTail: string): TranscriptLine[] {
  return lines.map((line) => ({ ...line, text: line.text.replace('{minutes}', String(minutes)).replace('{order_tail}', orderTail) }));
}

/** Builds the `index`-th benchmark prompt. The index sets the role, the transcript and the fact values. */
function benchmarkPrompt(index: number): PromptInput {
  const variant = Math.floor(index / 4);
  const minutes = 5 + ((index * 7) % 41);
  const orderTail = String((index * 2654435761) % 10000).padStart(4, '0');
  const question: TranscriptLine = { speaker: 'agent', text: riderQuestions[variant % riderQuestions.length]!.replace('{order_tail}', orderTail) };

  switch (index % 4) {
    case 0: {
      const transcript = fillPlaceholders(userTranscripts[variant % userTranscripts.length]!, minutes, orderTail);
      const facts: Facts = variant % 3 === 0 ? { order: 'none' } : { order: 'delivering', eta: 3 + (minutes % 30), late: minutes, comp: compensations[variant % compensations.length]! };
      return { role: 'user_agent', locale: 'zh', facts, transcript };
    }
    case 1: {
      const earlierExchanges = variant % 3;
      const transcript: TranscriptLine[] = [question];
      for (let exchange = 0; exchange < earlierExchanges; exchange++) {
        transcript.push({ speaker: 'rider', text: riderReplies[(variant + exchange) % riderReplies.length]!.replace('{minutes}', String(minutes)) });
        transcript.push({ speaker: 'agent', text: '辛苦了，请问大概还要多久能送到？' });
      }
      transcript.push({ speaker: 'rider', text: riderReplies[(variant + earlierExchanges) % riderReplies.length]!.replace('{minutes}', String(minutes)) });
      return { role: 'rider_agent', locale: 'zh', facts: { task: 'ask_eta', asked: earlierExchanges + 1 }, transcript };
    }
    case 2: {
      const transcript = fillPlaceholders(simCustomerTranscripts[variant % simCustomerTranscripts.length]!, minutes, orderTail);
      return { role: 'sim_customer', locale: 'zh', facts: { goal: variant % 2 === 0 ? 'late_order' : 'compensation', mood: moods[variant % moods.length]! }, transcript };
    }
    default: {
      const transcript: TranscriptLine[] = [question, { speaker: 'agent', text: `顾客已经等了${minutes}分钟了，麻烦您尽快送达` }];
      return { role: 'sim_rider', locale: 'zh', facts: { eta: 1 + (minutes % 40), situation: situations[variant % situations.length]! }, transcript };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting.

/** Returns the median, or the lower of the two middle values for an even count. */
function median(values: readonly number[]): number {
  return percentile(values, 0.5);
}

/** Returns the nearest-rank percentile of `values` for `p` in (0, 1]. */
function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
}

const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;
const ratio = (a: number, b: number) => round(a / b, 2);

/** Returns the mean gap between tokens after the first, or NaN for fewer than two tokens. */
function interTokenMs(firstTokenMs: number, totalMs: number, completionTokens: number): number {
  return completionTokens < 2 ? Number.NaN : (totalMs - firstTokenMs) / (completionTokens - 1);
}

interface Percentiles {
  p50: number;
  p95: number;
}

/** Returns p50 and p95 of the finite values, rounded to `digits` decimals. */
function percentiles(values: readonly number[], digits = 1): Percentiles {
  const finite = values.filter(Number.isFinite);
  return { p50: round(percentile(finite, 0.5), digits), p95: round(percentile(finite, 0.95), digits) };
}

// ---------------------------------------------------------------------------------------------
// Measurements.

interface Batch {
  seconds: number;
  results: GenerateResult[];
}

const tokensPerSecond = (batch: Batch) => batch.results.reduce((sum, r) => sum + r.completionTokens, 0) / batch.seconds;

async function concurrently(engine: Engine, prompts: readonly string[]): Promise<Batch> {
  const started = performance.now();
  const results = await Promise.all(prompts.map((prompt) => engine.generate({ prompt, maxNewTokens: options.newTokens })));
  return { seconds: (performance.now() - started) / 1000, results };
}

async function oneAtATime(engine: Engine, prompts: readonly string[]): Promise<Batch> {
  const started = performance.now();
  const results: GenerateResult[] = [];
  for (const prompt of prompts) results.push(await engine.generate({ prompt, maxNewTokens: options.newTokens }));
  return { seconds: (performance.now() - started) / 1000, results };
}

async function peerConcurrently(peer: TransformersPeer, promptIds: readonly number[][]): Promise<{ seconds: number; results: PeerGeneration[] }> {
  const started = performance.now();
  const results = await Promise.all(promptIds.map((ids) => peer.generate(ids, options.newTokens, options.stopAtEnd)));
  return { seconds: (performance.now() - started) / 1000, results };
}

interface Divergence {
  prompt: number;
  /** Index of the first new token at which the peer's text leaves the engine's text. */
  token: number;
  engineText: string;
  peerText: string;
}

/**
 * Compares the engine's text with the peer's token ids decoded by the engine's tokenizer. The
 * engine returns text, not ids, so special tokens (skipped when decoding) are not compared.
 */
function compareGreedy(tokenizer: TextTokenizer, engineText: string, peerIds: readonly number[], prompt: number): Divergence | null {
  const peerText = tokenizer.decode(peerIds);
  if (peerText === engineText) return null;

  let token = peerIds.length;
  for (let count = 1; count <= peerIds.length; count++) {
    // A character split across tokens decodes to U+FFFD until its last byte, so drop that tail.
    const prefix = tokenizer.decode(peerIds.slice(0, count)).replace(/\uFFFD+$/, '');
    if (!engineText.startsWith(prefix)) {
      token = count - 1;
      break;
    }
  }
  return { prompt, token, engineText, peerText };
}

// ---------------------------------------------------------------------------------------------
// The run.

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}`;
let commit = 'unknown';
try {
  commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
} catch {
  // Not a git checkout, so the report shows the commit as "unknown".
}
const loadBefore = loadavg();
console.log(`machine: ${machine}; load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}; commit ${commit}`);

const maxConcurrent = Math.max(...options.levels, options.peerConcurrency);
// Without the end token every request decodes exactly options.newTokens tokens, so all requests of a level cost the same.
let decodeSteps: number[] = [];
/** Milliseconds spent in engine calls by kind, and decode calls, since the last reset. */
let callTime = { prefill: 0, decode: 0, decodeCalls: 0 };
const engine = await Engine.load({
  modelDir: options.modelDir,
  maxBatchSize: maxConcurrent,
  intraOpThreads: options.threads,
  stopAtEndToken: options.stopAtEnd,
  graph: options.graph,
  observer: {
    step: (kind, _rows, _tokens, ms) => {
      callTime[kind] += ms;
      if (kind === 'decode') {
        callTime.decodeCalls++;
        decodeSteps.push(ms);
      }
    },
  },
});
const graphName = basename(engine.graphPath);
console.log(`graph: ${graphName}`);
const endIds = new Set([...engine.model.eosTokenIds, engine.tokenizer.tokenId('<|end|>')].filter((id) => id !== undefined));

/** Counts the peer's new tokens the way the engine does, which leaves out a final end token. */
const peerTokens = (generation: PeerGeneration) =>
  options.stopAtEnd && endIds.has(generation.tokenIds.at(-1) ?? -1) ? generation.tokenIds.length - 1 : generation.tokenIds.length;

const prompts = Array.from({ length: maxConcurrent }, (_, index) => renderPrompt(benchmarkPrompt(index)));
const promptIds = prompts.map((prompt) => engine.tokenizer.encode(prompt));
const promptLengths = promptIds.map((ids) => ids.length);
console.log(
  `${prompts.length} distinct prompts of ${Math.min(...promptLengths)}–${Math.max(...promptLengths)} tokens (median ${median(promptLengths)}); ` +
    `${options.newTokens} new tokens each, greedy; end token ${options.stopAtEnd ? 'stops a request' : 'ignored'}; ${options.threads} intra-op thread(s)`,
);

// Warm up, so that ONNX Runtime has allocated for prefill and batched decode shapes before timing.
await concurrently(engine, prompts.slice(0, Math.min(4, prompts.length)));

// Throughput per level. Concurrent and one-at-a-time runs alternate within each repeat, so a
// change in the machine's load hits both sides.
interface LevelRow {
  concurrent: number;
  batchedTokensPerSecond: number;
  oneAtATimeTokensPerSecond: number;
  ratio: number;
  batchedTextEqualsOneAtATime: string;
  decodeMsPerCall: { batched: number; oneAtATime: number };
  decodeStepGain: number;
  repeats: { batched: number[]; oneAtATime: number[] };
  timeSplit: { batched: string[]; oneAtATime: string[] };
}
const levels: LevelRow[] = [];
const completionTokens: number[] = [];
for (const level of options.levels) {
  const levelPrompts = prompts.slice(0, level);
  const batchedRates: number[] = [];
  const serialRates: number[] = [];
  // Milliseconds per decode call, batched and one at a time. Their ratio times the number of
  // rows is what batching gains on decode steps alone. Prefill costs the same either way, so
  // this gain bounds the whole ratio.
  const batchedStepMs: number[] = [];
  const serialStepMs: number[] = [];
  let sameOutputs = 0;
  const split = { batched: [] as string[], oneAtATime: [] as string[] };
  const describe = (wallSeconds: number) =>
    `prefill ${Math.round(callTime.prefill)} ms, ${callTime.decodeCalls} decode calls ${Math.round(callTime.decode)} ms, other ${Math.round(wallSeconds * 1000 - callTime.prefill - callTime.decode)} ms`;
  for (let repeat = 0; repeat < options.repeats; repeat++) {
    callTime = { prefill: 0, decode: 0, decodeCalls: 0 };
    const batched = await concurrently(engine, levelPrompts);
    split.batched.push(describe(batched.seconds));
    batchedStepMs.push(callTime.decode / callTime.decodeCalls);
    callTime = { prefill: 0, decode: 0, decodeCalls: 0 };
    const serial = await oneAtATime(engine, levelPrompts);
    split.oneAtATime.push(describe(serial.seconds));
    serialStepMs.push(callTime.decode / callTime.decodeCalls);
    batchedRates.push(tokensPerSecond(batched));
    serialRates.push(tokensPerSecond(serial));
    if (repeat === 0) sameOutputs = batched.results.filter((result, i) => result.text === serial.results[i]!.text).length;
    for (const result of [...batched.results, ...serial.results]) completionTokens.push(result.completionTokens);
  }
  const row: LevelRow = {
    concurrent: level,
    batchedTokensPerSecond: round(median(batchedRates)),
    oneAtATimeTokensPerSecond: round(median(serialRates)),
    ratio: ratio(median(batchedRates), median(serialRates)),
    batchedTextEqualsOneAtATime: `${sameOutputs}/${level}`,
    decodeMsPerCall: { batched: round(median(batchedStepMs), 3), oneAtATime: round(median(serialStepMs), 3) },
    decodeStepGain: ratio(level * median(serialStepMs), median(batchedStepMs)),
    repeats: { batched: batchedRates.map((r) => round(r)), oneAtATime: serialRates.map((r) => round(r)) },
    timeSplit: split,
  };
  levels.push(row);
  console.log(
    `  ${level} concurrent: ${row.batchedTokensPerSecond} tokens/s vs ${row.oneAtATimeTokensPerSecond} one at a time (${row.ratio}x); ` +
      `decode call ${row.decodeMsPerCall.batched} vs ${row.decodeMsPerCall.oneAtATime} ms (${row.decodeStepGain}x per row)`,
  );
  console.log(`    batched: ${split.batched[0]}; one at a time: ${split.oneAtATime[0]}`);
}
const endTokenStops = {
  requests: completionTokens.length,
  stoppedBeforeNewTokens: completionTokens.filter((n) => n < options.newTokens).length,
  meanCompletionTokens: round(completionTokens.reduce((sum, n) => sum + n, 0) / completionTokens.length),
};

// Engine and transformers.js on the same prompts at one concurrency, alternating within each repeat.
let peer: TransformersPeer | null = null;
let peerLoadError: string | null = null;
if (options.peer) {
  try {
    peer = await TransformersPeer.load({ modelDir: options.modelDir, intraOpThreads: options.threads });
  } catch (error) {
    peerLoadError = error instanceof Error ? error.message : String(error);
    console.log(`transformers.js failed to load ${options.modelDir}: ${peerLoadError}`);
  }
}

// transformers.js runs model.onnx in fp32, so the comparison runs the fp32 step graph: the same weights.
const fp32Graphs = ['model.step.onnx', 'model.onnx'];
const sameWeights = fp32Graphs.includes(graphName)
  ? engine
  : await Engine.load({ modelDir: options.modelDir, maxBatchSize: maxConcurrent, intraOpThreads: options.threads, stopAtEndToken: options.stopAtEnd, graph: 'model.step.onnx' });
const comparePrompts = prompts.slice(0, options.peerConcurrency);
const compareIds = promptIds.slice(0, options.peerConcurrency);
if (peer) await peerConcurrently(peer, compareIds.slice(0, Math.min(4, compareIds.length)));

const engineSide = { rates: [] as number[], firstTokenMs: [] as number[], interTokenMs: [] as number[], texts: [] as string[] };
const peerSide = { rates: [] as number[], firstTokenMs: [] as number[], interTokenMs: [] as number[], sequences: [] as number[][] };
for (let repeat = 0; repeat < options.repeats; repeat++) {
  const ours = await concurrently(sameWeights, comparePrompts);
  engineSide.rates.push(tokensPerSecond(ours));
  for (const result of ours.results) {
    engineSide.firstTokenMs.push(result.firstTokenMs);
    engineSide.interTokenMs.push(interTokenMs(result.firstTokenMs, result.totalMs, result.completionTokens));
  }
  engineSide.texts = ours.results.map((result) => result.text);

  if (!peer) continue;
  const theirs = await peerConcurrently(peer, compareIds);
  peerSide.rates.push(theirs.results.reduce((sum, generation) => sum + peerTokens(generation), 0) / theirs.seconds);
  for (const generation of theirs.results) {
    peerSide.firstTokenMs.push(generation.firstTokenMs);
    peerSide.interTokenMs.push(interTokenMs(generation.firstTokenMs, generation.totalMs, peerTokens(generation)));
  }
  peerSide.sequences = theirs.results.map((generation) => generation.tokenIds);
}

if (sameWeights !== engine) await sameWeights.close();
const engineAtComparison = {
  graph: 'model.step.onnx',
  tokensPerSecond: round(median(engineSide.rates)),
  repeats: engineSide.rates.map((r) => round(r)),
  firstTokenMs: percentiles(engineSide.firstTokenMs),
  interTokenMs: percentiles(engineSide.interTokenMs, 2),
};
const divergences = peer ? peerSide.sequences.map((ids, i) => compareGreedy(engine.tokenizer, engineSide.texts[i]!, ids, i)).filter((d) => d !== null) : [];
const peerAtComparison = peer
  ? {
      status: 'measured' as const,
      library: '@huggingface/transformers 4.3.2: AutoModelForCausalLM, dtype fp32, one generate() call per request',
      tokensPerSecond: round(median(peerSide.rates)),
      repeats: peerSide.rates.map((r) => round(r)),
      firstTokenMs: percentiles(peerSide.firstTokenMs),
      interTokenMs: percentiles(peerSide.interTokenMs, 2),
      engineToPeerRatio: ratio(median(engineSide.rates), median(peerSide.rates)),
      greedyMatches: `${options.peerConcurrency - divergences.length}/${options.peerConcurrency}`,
      divergences,
    }
  : peerLoadError !== null
    ? { status: 'load_failed' as const, error: peerLoadError }
    : { status: 'skipped' as const };

console.log(`  engine at ${options.peerConcurrency} concurrent: ${engineAtComparison.tokensPerSecond} tokens/s`);
if (peerAtComparison.status === 'measured') {
  console.log(`  transformers.js at ${options.peerConcurrency} concurrent: ${peerAtComparison.tokensPerSecond} tokens/s; greedy text identical for ${peerAtComparison.greedyMatches}`);
  for (const d of divergences) {
    console.log(`  prompt ${d.prompt} diverges at new token ${d.token}:\n    engine: ${JSON.stringify(d.engineText)}\n    peer:   ${JSON.stringify(d.peerText)}`);
  }
}

// Decode step cost against context length, one request at a time: the median time of the
// engine's decode steps while the request decodes, and the KV bytes it holds.
interface ContextRun {
  prompt: string;
  promptTokens: number;
  stepMs: number[];
  kvBytes: number;
  attendedTokens: number;
  rssGrowthBytes: number;
}

/** Decodes one request and records its decode steps; memory is sampled every 16 tokens. */
async function decodeRun(run: ContextRun): Promise<void> {
  const rssBefore = process.memoryUsage().rss;
  let tokens = 0;
  decodeSteps = [];
  await engine.generate({
    prompt: run.prompt,
    maxNewTokens: options.newTokens,
    onText: () => {
      if (tokens++ % 16 !== 8) return;
      const [sequence] = engine.sequences();
      if (sequence) ({ kvBytes: run.kvBytes, attendedTokens: run.attendedTokens } = sequence);
      run.rssGrowthBytes = Math.max(run.rssGrowthBytes, process.memoryUsage().rss - rssBefore);
    },
  });
  // The first step after prefill writes the new row; the rest append in place.
  run.stepMs.push(...decodeSteps.slice(1));
}

const contextRun = (targetTokens: number): ContextRun => {
  const { prompt, tokens } = longDialoguePrompt(engine.tokenizer, { order: 'delivering', eta: 12, late: 20, comp: 'due' }, targetTokens);
  return { prompt, promptTokens: tokens, stepMs: [], kvBytes: 0, attendedTokens: 0, rssGrowthBytes: 0 };
};
const shortRun = contextRun(options.shortContext);
const longRun = contextRun(options.longContext);
// Alternating the two lengths exposes both to the same background load.
for (let repeat = 0; repeat < options.repeats * 2; repeat++) {
  await decodeRun(shortRun);
  await decodeRun(longRun);
}
const summary = (run: ContextRun) => ({
  promptTokens: run.promptTokens,
  attendedTokens: run.attendedTokens,
  kvBytes: run.kvBytes,
  rssGrowthBytes: run.rssGrowthBytes,
  msPerStep: round(median(run.stepMs), 3),
  p95MsPerStep: round(percentile(run.stepMs, 0.95), 3),
});
const short = summary(shortRun);
const long = summary(longRun);
const contextCost = { short, long, ratio: ratio(long.msPerStep, short.msPerStep) };
console.log(`  decode step at ${short.promptTokens} tokens: ${short.msPerStep} ms; at ${long.promptTokens} tokens: ${long.msPerStep} ms (${contextCost.ratio}x)`);

await engine.close();
await peer?.close();

// ---------------------------------------------------------------------------------------------
// Report.

const report = {
  benchmark: 'engine',
  commit,
  machine,
  loadAverage: { before: loadBefore.map((l) => round(l, 2)), after: loadavg().map((l) => round(l, 2)) },
  modelDir: options.modelDir,
  settings: {
    newTokensPerRequest: options.newTokens,
    endToken: options.stopAtEnd ? 'stop' : 'ignore',
    decoding: 'greedy',
    repeats: options.repeats,
    intraOpThreads: options.threads,
    graph: graphName,
    promptTokens: { count: prompts.length, min: Math.min(...promptLengths), median: median(promptLengths), max: Math.max(...promptLengths) },
    tokensPerSecond: 'generated tokens / wall-clock seconds for the whole set of requests, prefill included; medians over repeats',
    firstTokenMs: 'from generate() to the first new token, queueing included',
    interTokenMs: 'per request, (total − first token) / (new tokens − 1)',
  },
  endTokenStops,
  levels,
  comparison: { concurrent: options.peerConcurrency, engine: engineAtComparison, peer: peerAtComparison },
  contextCost,
};
mkdirSync('bench/results', { recursive: true });
const file = `bench/results/engine-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
writeFileSync(file, JSON.stringify(report, null, 2) + '\n');

const formatPercentiles = (p: Percentiles) => `${p.p50} / ${p.p95} ms`;
const mib = (bytes: number) => `${round(bytes / 1024 / 1024, 1)} MiB`;

/** Table headers and phrases of one README language. */
interface TableWords {
  measured(): string;
  levels: string;
  peerHeader: string;
  engineRow: string;
  ratioRow: string;
  peerMissing(status: string): string;
  contextHeader: string;
  tokens: string;
  longShort: string;
  stops(): string;
  load(): string;
}

const tableWords: Record<'en' | 'zh', TableWords> = {
  en: {
    measured: () =>
      `Measured on ${machine}, commit ${commit}; ${options.newTokens} new tokens per request, greedy, end token ${options.stopAtEnd ? 'stops a request' : 'ignored'}, ` +
      `${options.threads} intra-op thread(s), ${options.repeats === 1 ? 'one run' : `medians of ${options.repeats} repeats`}; graph ${graphName} except in the transformers.js comparison.`,
    levels: '| concurrent requests | batched tokens/s | one at a time tokens/s | ratio | decode call, batched / one at a time | decode gain per row | batched text = one-at-a-time text |',
    peerHeader: `| ${options.peerConcurrency} concurrent requests | tokens/s | first token p50 / p95 | inter-token p50 / p95 | greedy text = engine's |`,
    engineRow: 'Sanfang engine, fp32 step graph',
    ratioRow: 'engine / transformers.js',
    peerMissing: (status: string) => (status === 'load_failed' ? 'failed to load' : 'skipped (--no-peer)'),
    contextHeader: '| one request, context | attends to | decode step p50 / p95 | KV cache held | process memory growth |',
    tokens: 'tokens',
    longShort: 'long / short',
    stops: () => `${endTokenStops.stoppedBeforeNewTokens} of ${endTokenStops.requests} throughput requests stopped on the end token; they averaged ${endTokenStops.meanCompletionTokens} new tokens.`,
    load: () => `Load average before / after: ${report.loadAverage.before.join(' ')} / ${report.loadAverage.after.join(' ')}.`,
  },
  zh: {
    measured: () =>
      `测量环境：${machine}，提交 ${commit}；每个请求 ${options.newTokens} 个新 token，贪心解码，结束符${options.stopAtEnd ? '结束请求' : '被忽略'}，` +
      `${options.threads} 个算子内线程，${options.repeats === 1 ? '运行一次' : `取 ${options.repeats} 次重复的中位数`}；除与 transformers.js 的对比外均使用 ${graphName}。`,
    levels: '| 并发请求数 | 批处理 token/秒 | 逐个处理 token/秒 | 之比 | 单次解码调用：批处理 / 逐个 | 每行解码收益 | 批处理输出 = 逐个输出 |',
    peerHeader: `| ${options.peerConcurrency} 个并发请求 | token/秒 | 首 token p50 / p95 | token 间隔 p50 / p95 | 贪心输出与引擎一致 |`,
    engineRow: '三方引擎，fp32 步进图',
    ratioRow: '引擎 / transformers.js',
    peerMissing: (status: string) => (status === 'load_failed' ? '加载失败' : '已跳过（--no-peer）'),
    contextHeader: '| 单个请求的上下文 | 关注的 token | 单步解码 p50 / p95 | 占用 KV 缓存 | 进程内存增长 |',
    tokens: 'token',
    longShort: '长 / 短',
    stops: () => `${endTokenStops.requests} 个吞吐请求中有 ${endTokenStops.stoppedBeforeNewTokens} 个因结束符提前停止，平均生成 ${endTokenStops.meanCompletionTokens} 个新 token。`,
    load: () => `运行前 / 后的负载均值：${report.loadAverage.before.join(' ')} / ${report.loadAverage.after.join(' ')}。`,
  },
};

/** Renders the run's tables as Markdown in one README language. */
function tables(words: TableWords): string[] {
  const lines = [
    words.measured(),
    '',
    words.levels,
    '|---|---|---|---|---|---|---|',
    ...levels.map(
      (l) =>
        `| ${l.concurrent} | ${l.batchedTokensPerSecond} | ${l.oneAtATimeTokensPerSecond} | ${l.ratio}x | ${l.decodeMsPerCall.batched} / ${l.decodeMsPerCall.oneAtATime} ms | ${l.decodeStepGain}x | ${l.batchedTextEqualsOneAtATime} |`,
    ),
    '',
    words.peerHeader,
    '|---|---|---|---|---|',
    `| ${words.engineRow} | ${engineAtComparison.tokensPerSecond} | ${formatPercentiles(engineAtComparison.firstTokenMs)} | ${formatPercentiles(engineAtComparison.interTokenMs)} | |`,
  ];
  if (peerAtComparison.status === 'measured') {
    lines.push(
      `| transformers.js 4.3.2 | ${peerAtComparison.tokensPerSecond} | ${formatPercentiles(peerAtComparison.firstTokenMs)} | ${formatPercentiles(peerAtComparison.interTokenMs)} | ${peerAtComparison.greedyMatches} |`,
      `| ${words.ratioRow} | ${peerAtComparison.engineToPeerRatio}x | | | |`,
    );
  } else {
    lines.push(`| transformers.js 4.3.2 | ${words.peerMissing(peerAtComparison.status)} | | | |`);
  }
  lines.push(
    '',
    words.contextHeader,
    '|---|---|---|---|---|',
    `| ${short.promptTokens} ${words.tokens} | ${short.attendedTokens} ${words.tokens} | ${short.msPerStep} / ${short.p95MsPerStep} ms | ${mib(short.kvBytes)} | ${mib(short.rssGrowthBytes)} |`,
    `| ${long.promptTokens} ${words.tokens} | ${long.attendedTokens} ${words.tokens} | ${long.msPerStep} / ${long.p95MsPerStep} ms | ${mib(long.kvBytes)} | ${mib(long.rssGrowthBytes)} |`,
    `| ${words.longShort} | | ${contextCost.ratio}x | | |`,
    '',
  );
  if (options.stopAtEnd) lines.push(words.stops(), '');
  lines.push(words.load());
  return lines;
}

console.log(['', ...tables(tableWords.en), `wrote ${file}`].join('\n'));
// A shorter or otherwise changed run would replace the published tables with partial ones.
const changed = program.options
  .map((option) => option.attributeName())
  .filter((name) => !['threads', 'readme'].includes(name) && program.getOptionValueSource(name) !== 'default');
if (options.readme && changed.length > 0) {
  console.log(`left the README tables alone: only runs with the default settings (apart from --threads) write them, and this one set ${changed.join(', ')}`);
} else if (options.readme) {
  // One block per thread count, so runs at 1 and 2 threads both stay published.
  const key = `bench:engine threads=${options.threads}`;
  for (const [readme, words] of [['README.md', tableWords.en], ['README.zh-CN.md', tableWords.zh]] as const) {
    const updated = replaceReadmeBlock(readme, key, tables(words).join('\n'));
    console.log(updated ? `updated the "${key}" tables in ${readme}` : `${readme} has no "${key}" block; left it alone`);
  }
}
