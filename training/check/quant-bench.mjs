#!/usr/bin/env node
// Compares quantized step graphs with the float32 one in onnxruntime-node:
// speed per call and how far greedy decoding drifts.
//
//   node training/check/quant-bench.mjs MODEL_DIR [--graph LABEL=FILE ...]
//     [--threads 1,2] [--rounds 40] [--prompts FILE] [--prompt-count 16]
//     [--greedy-steps 64] [--ignore-eos] [--no-timing] [--no-greedy] [--json FILE]
//
// The first --graph is the reference. Without --graph the graphs are
// onnx/model.step.onnx (fp32), then onnx/model.step.q4.onnx (q4) and
// onnx/model.step.q8.onnx (q8) where they exist.
//
// Timing: the median ms per session.run() of each graph, at each --threads
// value of intraOpNumThreads, for
// - decode at batch 1 and at batch 16: 1 new token per row after 100 past tokens;
// - prefill of 16 rows x 48 tokens with no past.
// Token rows are held-out prompts and completions, tokenized with tokenizer.json,
// and the past keys and values come from a prefill by the reference graph, so
// the routers pick experts for the hidden states of real text. Graphs run in turn within each round, so load
// from other processes on the machine falls on all of them, not on one.
//
// Greedy agreement: for each prompt, a prefill then --greedy-steps decode steps
// that feed past keys built from the new_key/new_value outputs, stopping at the
// end token unless --ignore-eos. It reports how many token sequences equal the
// reference's and the mean position of the first differing token (the sequence
// length when equal). It also feeds every graph the reference's tokens (teacher
// forcing) and reports the share of steps whose argmax equals the reference
// token, which keeps counting after the first difference.
//
// Prompts are --prompt-count lines spread evenly over --prompts, a JSON-lines
// file with a `prompt` field (default: the held-out split that `npm run corpus`
// writes).

import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Tokenizer } from '@huggingface/tokenizers';
import ort from 'onnxruntime-node';
import { concatLength } from './kv-tensors.mjs';

const { values: options, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    graph: { type: 'string', multiple: true, default: [] },
    threads: { type: 'string', default: '1,2' },
    rounds: { type: 'string', default: '40' },
    warmup: { type: 'string', default: '5' },
    prompts: { type: 'string', default: 'training/out/corpus/heldout.text.jsonl' },
    'prompt-count': { type: 'string', default: '16' },
    'greedy-steps': { type: 'string', default: '64' },
    'ignore-eos': { type: 'boolean', default: false },
    'no-timing': { type: 'boolean', default: false },
    'no-greedy': { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});

if (positionals.length !== 1) {
  console.error(
    'usage: node training/check/quant-bench.mjs MODEL_DIR [--graph LABEL=FILE ...] [--threads 1,2] [--rounds 40] [--warmup 5] [--prompts FILE] [--prompt-count 16] [--greedy-steps 64] [--ignore-eos] [--no-timing] [--no-greedy] [--json FILE]',
  );
  process.exit(2);
}

const modelDir = positionals[0];
const config = JSON.parse(await readFile(path.join(modelDir, 'config.json'), 'utf8'));
const layers = config.num_hidden_layers;
const kvHeads = config.num_key_value_heads;
const headDim = config.head_dim ?? config.hidden_size / config.num_attention_heads;
const vocabSize = config.vocab_size;
// With --ignore-eos greedy decoding runs all --greedy-steps steps.
const eosIds = options['ignore-eos'] ? new Set() : new Set([config.eos_token_id].flat());
const threadCounts = options.threads.split(',').map(Number);
const rounds = Number(options.rounds);
const warmupRuns = Number(options.warmup);
const promptCount = Number(options['prompt-count']);
const greedySteps = Number(options['greedy-steps']);
// Additive bias of a masked column. The step graph raises anything lower to -1e9.
const MASKED = -1e9;
const DECODE_PAST = 100;
const PREFILL_ROWS = 16;
const PREFILL_TOKENS = 48;

const graphs = resolveGraphs();
const reference = graphs[0];
const tokenizer = await loadTokenizer();
const examples = await loadExamples();
const results = { modelDir, graphs: graphs.map(({ label, file }) => ({ label, file })), timing: [], greedy: [] };

function resolveGraphs() {
  if (options.graph.length === 0) {
    const stepGraph = path.join(modelDir, 'onnx', 'model.step.onnx');
    if (!existsSync(stepGraph)) throw new Error(`step graph not found: ${stepGraph}. Export it or pass --graph LABEL=FILE`);
    const quantized = [
      ['q4', path.join(modelDir, 'onnx', 'model.step.q4.onnx')],
      ['q8', path.join(modelDir, 'onnx', 'model.step.q8.onnx')],
    ];
    return [{ label: 'fp32', file: stepGraph }, ...quantized.filter(([, file]) => existsSync(file)).map(([label, file]) => ({ label, file }))];
  }
  return options.graph.map((entry) => {
    const separator = entry.indexOf('=');
    if (separator < 1) throw new Error(`invalid --graph ${JSON.stringify(entry)}: expected LABEL=FILE, for example q4=models/sanfang-moe-v0/onnx/model.step.q4.onnx`);
    const file = entry.slice(separator + 1);
    if (!existsSync(file)) throw new Error(`graph file not found: ${file}`);
    return { label: entry.slice(0, separator), file };
  });
}

async function loadTokenizer() {
  const tokenizerJson = JSON.parse(await readFile(path.join(modelDir, 'tokenizer.json'), 'utf8'));
  const tokenizerConfig = JSON.parse(await readFile(path.join(modelDir, 'tokenizer_config.json'), 'utf8'));
  const instance = new Tokenizer(tokenizerJson, tokenizerConfig);
  return { encode: (text) => instance.encode(text, { add_special_tokens: false }).ids };
}

/** Reads --prompt-count examples spread evenly over the prompts file. */
async function loadExamples() {
  if (!existsSync(options.prompts)) {
    throw new Error(`prompts file not found: ${options.prompts}. Run \`npm run corpus\` or pass --prompts with a JSON-lines file of {"prompt": ...}`);
  }
  const lines = (await readFile(options.prompts, 'utf8')).trim().split('\n');
  const stride = Math.max(1, Math.floor(lines.length / promptCount));
  return Array.from({ length: Math.min(promptCount, lines.length) }, (_, index) => JSON.parse(lines[index * stride]));
}

// ---------------------------------------------------------------- tensors

function createSession(file, threads) {
  return ort.InferenceSession.create(file, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', logSeverityLevel: 3 });
}

function int64Tensor(rows) {
  return new ort.Tensor('int64', BigInt64Array.from(rows.flat(), (value) => BigInt(value)), [rows.length, rows[0].length]);
}

/** Causal bias [batch, seq, past + seq]: query i (at position past + i) may attend to keys 0..past + i. */
function causalBias(batch, seq, past) {
  const total = past + seq;
  const data = new Float32Array(batch * seq * total);
  for (let row = 0; row < batch; row++) {
    for (let query = 0; query < seq; query++) {
      data.fill(MASKED, (row * seq + query) * total + past + query + 1, (row * seq + query + 1) * total);
    }
  }
  return new ort.Tensor('float32', data, [batch, seq, total]);
}

function emptyCache(batch) {
  const empty = () => new ort.Tensor('float32', new Float32Array(0), [batch, kvHeads, 0, headDim]);
  return Array.from({ length: layers }, () => ({ key: empty(), value: empty() }));
}

function appendCache(cache, outputs) {
  return cache.map((entry, layer) => ({
    key: concatLength(entry.key, outputs[`new_key.${layer}`]),
    value: concatLength(entry.value, outputs[`new_value.${layer}`]),
  }));
}

/** Feeds for rows of equal length that continue after `past` cached tokens. */
function stepFeeds(rows, past, cache) {
  const feeds = {
    input_ids: int64Tensor(rows),
    position_ids: int64Tensor(rows.map((row) => row.map((_, index) => past + index))),
    attention_bias: causalBias(rows.length, rows[0].length, past),
  };
  cache.forEach((entry, layer) => {
    feeds[`past_key.${layer}`] = entry.key;
    feeds[`past_value.${layer}`] = entry.value;
  });
  return feeds;
}

function argmax(logits, row) {
  const start = row * vocabSize;
  let best = 0;
  for (let i = 1; i < vocabSize; i++) if (logits[start + i] > logits[start + best]) best = i;
  return best;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

// ---------------------------------------------------------------- timing

/** Returns PREFILL_ROWS token rows of DECODE_PAST + 1 tokens, each cut from consecutive held-out examples. */
function timingRows() {
  const rows = [];
  let next = 0;
  while (rows.length < PREFILL_ROWS) {
    const row = [];
    while (row.length <= DECODE_PAST) {
      const example = examples[next++ % examples.length];
      row.push(...tokenizer.encode(example.prompt + (example.completion ?? '')));
    }
    rows.push(row.slice(0, DECODE_PAST + 1));
  }
  return rows;
}

/** Selects rows [0, batch) of each [PREFILL_ROWS, kv_heads, past, head_dim] cache tensor. */
function firstRows(cache, batch) {
  const slice = (tensor) => {
    const [, heads, length, dim] = tensor.dims;
    return new ort.Tensor('float32', tensor.data.slice(0, batch * heads * length * dim), [batch, heads, length, dim]);
  };
  return cache.map((entry) => ({ key: slice(entry.key), value: slice(entry.value) }));
}

async function timeCases(threads) {
  const sessions = [];
  for (const graph of graphs) sessions.push(await createSession(graph.file, threads));

  const rows = timingRows();
  const prefillOutputs = await sessions[0].run(stepFeeds(rows.map((row) => row.slice(0, DECODE_PAST)), 0, emptyCache(PREFILL_ROWS)));
  const past = appendCache(emptyCache(PREFILL_ROWS), prefillOutputs);
  const cases = [
    { name: `decode batch 1 (seq 1, past ${DECODE_PAST})`, feeds: stepFeeds([[rows[0][DECODE_PAST]]], DECODE_PAST, firstRows(past, 1)) },
    { name: `decode batch 16 (seq 1, past ${DECODE_PAST})`, feeds: stepFeeds(rows.map((row) => [row[DECODE_PAST]]), DECODE_PAST, past) },
    { name: `prefill ${PREFILL_ROWS} x ${PREFILL_TOKENS} (past 0)`, feeds: stepFeeds(rows.map((row) => row.slice(0, PREFILL_TOKENS)), 0, emptyCache(PREFILL_ROWS)) },
  ];

  for (const testCase of cases) {
    for (const session of sessions) for (let run = 0; run < warmupRuns; run++) await session.run(testCase.feeds);
    const times = sessions.map(() => []);
    for (let round = 0; round < rounds; round++) {
      // Rotate the order so that no graph always runs right after another one.
      for (let offset = 0; offset < sessions.length; offset++) {
        const index = (round + offset) % sessions.length;
        const started = performance.now();
        await sessions[index].run(testCase.feeds);
        times[index].push(performance.now() - started);
      }
    }
    const medians = times.map(median);
    results.timing.push({ case: testCase.name, threads, ms: Object.fromEntries(graphs.map((graph, index) => [graph.label, medians[index]])) });
    const cells = medians.map((ms, index) => (index === 0 ? ms.toFixed(2) : `${ms.toFixed(2)} (${(medians[0] / ms).toFixed(2)}x)`));
    console.log(`| ${testCase.name} | ${threads} | ${cells.join(' | ')} |`);
  }
  for (const session of sessions) await session.release();
}

// ---------------------------------------------------------------- greedy agreement

/**
 * Decodes one prompt greedily at batch 1 and returns the generated ids. With `forced`, feeds
 * forced[step] after each step instead of the graph's own choice and still records the choice.
 */
async function greedy(session, promptIds, forced) {
  let outputs = await session.run(stepFeeds([promptIds], 0, emptyCache(1)));
  let cache = appendCache(emptyCache(1), outputs);
  const chosen = [];
  const steps = forced ? forced.length : greedySteps;
  for (let step = 0; step < steps; step++) {
    const token = argmax(outputs.logits.data, 0);
    chosen.push(token);
    const fed = forced ? forced[step] : token;
    if (step === steps - 1 || (!forced && eosIds.has(fed))) break;
    outputs = await session.run(stepFeeds([[fed]], promptIds.length + step, cache));
    cache = appendCache(cache, outputs);
  }
  return chosen;
}

async function measureGreedy(threads) {
  const promptIds = examples.map((example) => tokenizer.encode(example.prompt));
  const sessions = [];
  for (const graph of graphs) sessions.push(await createSession(graph.file, threads));

  const referenceRuns = [];
  for (const ids of promptIds) referenceRuns.push(await greedy(sessions[0], ids));

  const meanLength = referenceRuns.reduce((sum, run) => sum + run.length, 0) / referenceRuns.length;
  const stopRule = options['ignore-eos'] ? '' : ', stopping at the end token';
  console.log(`\ngreedy agreement with ${reference.label}: ${promptIds.length} prompts from ${options.prompts}, up to ${greedySteps} new tokens${stopRule} (mean ${meanLength.toFixed(1)} for ${reference.label})`);
  console.log('| graph | equal sequences | mean first difference | teacher-forced top-1 agreement |');
  console.log('|---|---|---|---|');
  for (let index = 1; index < sessions.length; index++) {
    let equal = 0;
    let firstDifferenceSum = 0;
    let agreeing = 0;
    let forcedSteps = 0;
    for (let prompt = 0; prompt < promptIds.length; prompt++) {
      const expected = referenceRuns[prompt];
      const own = await greedy(sessions[index], promptIds[prompt]);
      let firstDifference = 0;
      while (firstDifference < Math.min(own.length, expected.length) && own[firstDifference] === expected[firstDifference]) firstDifference++;
      if (firstDifference === expected.length && own.length === expected.length) equal++;
      firstDifferenceSum += firstDifference;

      const forced = await greedy(sessions[index], promptIds[prompt], expected);
      agreeing += forced.filter((token, step) => token === expected[step]).length;
      forcedSteps += expected.length;
    }
    const row = {
      graph: graphs[index].label,
      prompts: promptIds.length,
      equalSequences: equal,
      meanFirstDifference: firstDifferenceSum / promptIds.length,
      teacherForcedAgreement: agreeing / forcedSteps,
    };
    results.greedy.push(row);
    console.log(`| ${row.graph} | ${equal}/${promptIds.length} | ${row.meanFirstDifference.toFixed(1)} | ${(100 * row.teacherForcedAgreement).toFixed(1)}% |`);
  }
  for (const session of sessions) await session.release();
}

// ---------------------------------------------------------------- main

console.log(`graphs: ${graphs.map(({ label, file }) => `${label}=${file}`).join(', ')}`);
if (!options['no-timing']) {
  console.log(`\nmedian ms per call over ${rounds} rounds (speed-up over ${reference.label})`);
  console.log(`| case | threads | ${graphs.map(({ label }) => label).join(' | ')} |`);
  console.log(`|---|---|${graphs.map(() => '---|').join('')}`);
  for (const threads of threadCounts) await timeCases(threads);
}
if (!options['no-greedy']) await measureGreedy(Math.max(...threadCounts));
if (options.json) await writeFile(options.json, `${JSON.stringify(results, null, 2)}\n`);
