#!/usr/bin/env node
// Checks onnx/model.step.onnx against onnx/model.onnx in onnxruntime-node on the
// same inputs, then times both.
//
//   node training/check/step-parity.mjs MODEL_DIR [--step-graph FILE] [--compare FILE ...]
//     [--fixture FILE] [--threads 2] [--tolerance 1e-4] [--no-timing] [--timing-rounds 3]
//
// Checks, each within --tolerance:
// - a left-padded prefill of 2 rows of different lengths, then decode steps whose
//   past is built from the step graph's own new_key/new_value outputs: logits
//   and new keys/values equal the standard graph's logits and present tensors;
// - a fully masked query row stays finite, with -1e9 and with -Infinity in the bias;
// - two sequences packed into one row with a block-diagonal bias give the same
//   last-token logits as each sequence run alone, in prefill and decode;
// - greedy decoding of 3 prompts (tokenized with tokenizer.json when the model
//   directory has one) gives identical tokens for --greedy-steps steps (32);
// - with --fixture, the step graph's outputs equal torch's (the fixture is
//   written by training/trainer/test_trainer.py).
// A step graph exported with an expert capacity runs only the --fixture checks,
// because dropped assignments depend on which tokens share a call.
// Then it prints the node count of the graphs after ONNX Runtime's optimization
// and checks that only MatMul, Shape and Unsqueeze nodes read the past tensors. Unless
// --no-timing, it prints the median time of decode and prefill calls for the
// standard graph, the step graph and each --compare graph, for example a step
// graph exported with another --moe-dispatch.
//
// Exits 1 when a check fails.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Tokenizer } from '@huggingface/tokenizers';
import ort from 'onnxruntime-node';
import { concatLength } from './kv-tensors.mjs';
import { graphNodes } from './onnx-graph-nodes.mjs';

const { values: options, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'step-graph': { type: 'string' },
    compare: { type: 'string', multiple: true, default: [] },
    fixture: { type: 'string' },
    threads: { type: 'string', default: '2' },
    tolerance: { type: 'string', default: '1e-4' },
    'no-timing': { type: 'boolean', default: false },
    'greedy-steps': { type: 'string', default: '32' },
    'timing-rounds': { type: 'string', default: '3' },
  },
});

if (positionals.length !== 1) {
  console.error(
    'usage: node training/check/step-parity.mjs MODEL_DIR [--step-graph FILE] [--compare FILE ...] [--fixture FILE] ' +
      '[--threads N] [--tolerance X] [--greedy-steps N] [--no-timing] [--timing-rounds N]',
  );
  process.exit(2);
}

const modelDir = positionals[0];
const standardPath = path.join(modelDir, 'onnx', 'model.onnx');
const stepPath = options['step-graph'] ?? path.join(modelDir, 'onnx', 'model.step.onnx');
const threads = Number(options.threads);
const tolerance = Number(options.tolerance);
const greedySteps = Number(options['greedy-steps']);
const config = JSON.parse(await readFile(path.join(modelDir, 'config.json'), 'utf8'));
const layers = config.num_hidden_layers;
const kvHeads = config.num_key_value_heads;
const headDim = config.head_dim;
const vocabSize = config.vocab_size;
const padId = config.pad_token_id ?? 0;
const topK = config.num_experts_per_tok;
// Additive bias for a masked column. The step graph raises anything lower to -1e9.
const MASKED = -1e9;
const failures = [];

// ---------------------------------------------------------------- sessions

const scratchDir = await mkdtemp(path.join(os.tmpdir(), 'step-parity-'));

function sessionOptions(optimizedModelFilePath) {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    // Saving the optimized model logs a warning about hardware-specific
    // layouts; the saved file is only read to count nodes.
    logSeverityLevel: 3,
    ...(optimizedModelFilePath ? { optimizedModelFilePath } : {}),
  };
}

const standardOptimized = path.join(scratchDir, 'standard.optimized.onnx');
const stepOptimized = path.join(scratchDir, 'step.optimized.onnx');
const standard = await ort.InferenceSession.create(standardPath, sessionOptions(standardOptimized));
const step = await ort.InferenceSession.create(stepPath, sessionOptions(stepOptimized));
const hasDropped = step.outputNames.includes('expert_dropped');

// ---------------------------------------------------------------- tensors

function int64Tensor(rows) {
  return new ort.Tensor('int64', BigInt64Array.from(rows.flat(), (value) => BigInt(value)), [rows.length, rows[0].length]);
}

function emptyCache(batch) {
  return Array.from({ length: layers }, () => ({
    key: new ort.Tensor('float32', new Float32Array(0), [batch, kvHeads, 0, headDim]),
    value: new ort.Tensor('float32', new Float32Array(0), [batch, kvHeads, 0, headDim]),
  }));
}

/** Returns positions [start, end) of one row of a [batch, kv_heads, length, head_dim] tensor as [1, kv_heads, end - start, head_dim]. */
function sliceLength(tensor, row, start, end) {
  const [, heads, length, dim] = tensor.dims;
  const width = end - start;
  const data = new Float32Array(heads * width * dim);
  for (let head = 0; head < heads; head++) {
    const from = ((row * heads + head) * length + start) * dim;
    data.set(tensor.data.subarray(from, from + width * dim), head * width * dim);
  }
  return new ort.Tensor('float32', data, [1, heads, width, dim]);
}

function appendCache(cache, outputs) {
  return cache.map((entry, layer) => ({
    key: concatLength(entry.key, outputs[`new_key.${layer}`]),
    value: concatLength(entry.value, outputs[`new_value.${layer}`]),
  }));
}

function presentCache(outputs) {
  return Array.from({ length: layers }, (_, layer) => ({
    key: outputs[`present.${layer}.key`],
    value: outputs[`present.${layer}.value`],
  }));
}

function sliceCache(cache, row, start, end) {
  return cache.map((entry) => ({ key: sliceLength(entry.key, row, start, end), value: sliceLength(entry.value, row, start, end) }));
}

/** Builds a [batch, seq, past + seq] bias from a per-row rule allowed(row, query, key). */
function biasTensor(batch, seq, total, allowed, maskValue = MASKED) {
  const data = new Float32Array(batch * seq * total);
  for (let row = 0; row < batch; row++) {
    for (let query = 0; query < seq; query++) {
      for (let key = 0; key < total; key++) {
        data[(row * seq + query) * total + key] = allowed(row, query, key) ? 0 : maskValue;
      }
    }
  }
  return new ort.Tensor('float32', data, [batch, seq, total]);
}

/** Bias equal to the standard graph's mask: causal, and only keys whose attention_mask is 1. */
function biasFromMask(mask, seq, maskValue = MASKED) {
  const total = mask[0].length;
  const past = total - seq;
  return biasTensor(mask.length, seq, total, (row, query, key) => key <= past + query && mask[row][key] === 1, maskValue);
}

async function runStandard(session, ids, mask, positions, cache) {
  const feeds = { input_ids: int64Tensor(ids), attention_mask: int64Tensor(mask), position_ids: int64Tensor(positions) };
  cache.forEach((entry, layer) => {
    feeds[`past_key_values.${layer}.key`] = entry.key;
    feeds[`past_key_values.${layer}.value`] = entry.value;
  });
  return session.run(feeds);
}

async function runStep(session, ids, positions, bias, cache) {
  const feeds = { input_ids: int64Tensor(ids), position_ids: int64Tensor(positions), attention_bias: bias };
  cache.forEach((entry, layer) => {
    feeds[`past_key.${layer}`] = entry.key;
    feeds[`past_value.${layer}`] = entry.value;
  });
  return session.run(feeds);
}

// ---------------------------------------------------------------- comparisons

function maxAbsDiff(left, right) {
  if (left.length !== right.length) return Infinity;
  let max = 0;
  for (let i = 0; i < left.length; i++) {
    const diff = Math.abs(left[i] - right[i]);
    if (!(diff <= max)) max = Number.isNaN(diff) ? Infinity : diff;
  }
  return max;
}

function allFinite(values) {
  return values.every(Number.isFinite);
}

function report(label, diff, limit = tolerance) {
  const ok = diff <= limit;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${label}: max |diff| ${diff.toExponential(2)} (tolerance ${limit})`);
  if (!ok) failures.push(label);
}

function assert(label, condition, detail = '') {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${label}${detail ? `: ${detail}` : ''}`);
  if (!condition) failures.push(label);
}

/** Returns the logits of the last position of each row of a standard [batch, seq, vocab] tensor. */
function lastLogits(tensor) {
  const [batch, seq, vocab] = tensor.dims;
  const data = new Float32Array(batch * vocab);
  for (let row = 0; row < batch; row++) data.set(tensor.data.subarray(((row + 1) * seq - 1) * vocab, (row + 1) * seq * vocab), row * vocab);
  return data;
}

function argmaxRows(logits, vocab) {
  const ids = [];
  for (let start = 0; start < logits.length; start += vocab) {
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[start + i] > logits[start + best]) best = i;
    ids.push(best);
  }
  return ids;
}

/** Returns the largest difference between a step graph's new keys/values and positions [start, end) of the standard presents, over the given rows. */
function newKeyValueDiff(stepOutputs, present, rows, start, end, stepStart = 0) {
  let max = 0;
  for (let layer = 0; layer < layers; layer++) {
    for (const [kind, presentKind] of [['new_key', 'key'], ['new_value', 'value']]) {
      const ours = stepOutputs[`${kind}.${layer}`];
      const theirs = present[`present.${layer}.${presentKind}`];
      for (const row of rows) {
        const width = end - start;
        const ourSlice = sliceLength(ours, row, stepStart, stepStart + width).data;
        max = Math.max(max, maxAbsDiff(ourSlice, sliceLength(theirs, row, start, end).data));
      }
    }
  }
  return max;
}

function checkExpertCounts(label, outputs, tokens) {
  const counts = outputs.expert_counts;
  const routes = counts.dims[1];
  let ok = counts.dims[0] === layers;
  for (let layer = 0; layer < layers && ok; layer++) {
    const row = Array.from(counts.data.subarray(layer * routes, (layer + 1) * routes));
    const total = row.reduce((sum, value) => sum + value, 0);
    ok = total === tokens * topK && row.every((value) => Number.isInteger(value) && value >= 0);
  }
  assert(`${label}: expert_counts sum to tokens x top-k (${tokens} x ${topK}) in every layer`, ok);
}

// ---------------------------------------------------------------- token sources

/** Returns a deterministic pseudo-random token id source (a 32-bit LCG) that never yields the pad id. */
function tokenSource(seed) {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return 1 + (state % (vocabSize - 1));
  };
}

function randomRow(next, length) {
  return Array.from({ length }, next);
}

/** Left-pads rows to one width; returns ids, the 0/1 mask and positions counted from each row's first real token. */
function leftPad(rows) {
  const width = Math.max(...rows.map((row) => row.length));
  const ids = rows.map((row) => [...new Array(width - row.length).fill(padId), ...row]);
  const mask = rows.map((row) => [...new Array(width - row.length).fill(0), ...new Array(row.length).fill(1)]);
  const positions = rows.map((row) => [...new Array(width - row.length).fill(0), ...row.map((_, index) => index)]);
  return { ids, mask, positions };
}

// ---------------------------------------------------------------- checks

async function checkPaddedPrefillAndDecode(decodeSteps) {
  const next = tokenSource(7);
  const { ids, mask, positions } = leftPad([randomRow(next, 9), randomRow(next, 5)]);
  const seq = ids[0].length;
  const realRows = [0, 1];

  let standardOutputs = await runStandard(standard, ids, mask, positions, emptyCache(2));
  let stepOutputs = await runStep(step, ids, positions, biasFromMask(mask, seq), emptyCache(2));
  report('padded prefill (2 rows, lengths 9 and 5): last-position logits', maxAbsDiff(stepOutputs.logits.data, lastLogits(standardOutputs.logits)));
  let keyDiff = 0;
  for (const row of realRows) {
    const first = mask[row].indexOf(1);
    keyDiff = Math.max(keyDiff, newKeyValueDiff(stepOutputs, standardOutputs, [row], first, seq, first));
  }
  report('padded prefill: new_key/new_value equal the present tensors at real positions', keyDiff);
  assert('padded prefill: every output is finite, padding rows included', Object.values(stepOutputs).every((t) => allFinite(t.data)));
  checkExpertCounts('padded prefill', stepOutputs, 2 * seq);

  let stepCache = appendCache(emptyCache(2), stepOutputs);
  let currentMask = mask;
  let currentPositions = positions.map((row) => row[row.length - 1]);
  let logitsDiff = 0;
  let newDiff = 0;
  for (let stepIndex = 0; stepIndex < decodeSteps; stepIndex++) {
    const tokens = argmaxRows(lastLogits(standardOutputs.logits), vocabSize).map((id) => [id]);
    currentMask = currentMask.map((row) => [...row, 1]);
    currentPositions = currentPositions.map((position) => position + 1);
    const positionRows = currentPositions.map((position) => [position]);
    const past = currentMask[0].length - 1;

    standardOutputs = await runStandard(standard, tokens, currentMask, positionRows, presentCache(standardOutputs));
    stepOutputs = await runStep(step, tokens, positionRows, biasFromMask(currentMask, 1), stepCache);
    logitsDiff = Math.max(logitsDiff, maxAbsDiff(stepOutputs.logits.data, lastLogits(standardOutputs.logits)));
    newDiff = Math.max(newDiff, newKeyValueDiff(stepOutputs, standardOutputs, realRows, past, past + 1));
    stepCache = appendCache(stepCache, stepOutputs);
  }
  report(`${decodeSteps} decode steps on a past built from new_key/new_value: logits`, logitsDiff);
  report(`${decodeSteps} decode steps: new_key/new_value equal the presents' last position`, newDiff);

  let cacheDiff = 0;
  for (const row of realRows) {
    const first = mask[row].indexOf(1);
    const total = currentMask[0].length;
    for (let layer = 0; layer < layers; layer++) {
      const ours = sliceCache(stepCache, row, first, total)[layer];
      cacheDiff = Math.max(
        cacheDiff,
        maxAbsDiff(ours.key.data, sliceLength(standardOutputs[`present.${layer}.key`], row, first, total).data),
        maxAbsDiff(ours.value.data, sliceLength(standardOutputs[`present.${layer}.value`], row, first, total).data),
      );
    }
  }
  report('cache built from new_key/new_value equals the final present tensors', cacheDiff);
}

async function checkFullyMaskedRow() {
  const next = tokenSource(11);
  const ids = [randomRow(next, 4)];
  const positions = [[0, 1, 2, 3]];
  // Query 0 may attend to nothing; the others attend causally.
  const allowed = (row, query, key) => query > 0 && key <= query;
  const finiteBias = await runStep(step, ids, positions, biasTensor(1, 4, 4, allowed), emptyCache(1));
  const infiniteBias = await runStep(step, ids, positions, biasTensor(1, 4, 4, allowed, -Infinity), emptyCache(1));
  assert('fully masked query row: every output is finite with a -1e9 bias', Object.values(finiteBias).every((t) => allFinite(t.data)));
  assert('fully masked query row: every output is finite with a -Infinity bias', Object.values(infiniteBias).every((t) => allFinite(t.data)));
  report('-Infinity bias gives the same logits as -1e9', maxAbsDiff(finiteBias.logits.data, infiniteBias.logits.data));
}

async function checkPacked() {
  const next = tokenSource(23);
  const first = randomRow(next, 6);
  const second = randomRow(next, 4);
  const segment = (column) => (column < first.length ? 0 : 1);
  const packedPositions = [[...first.map((_, i) => i), ...second.map((_, i) => i)]];
  const total = first.length + second.length;
  // Block-diagonal and causal: a token attends to itself and earlier tokens of its own sequence.
  const packedBias = biasTensor(1, total, total, (row, query, key) => segment(key) === segment(query) && key <= query);
  const packed = await runStep(step, [[...first, ...second]], packedPositions, packedBias, emptyCache(1));

  const firstAlone = await runStandard(standard, [first], [first.map(() => 1)], [first.map((_, i) => i)], emptyCache(1));
  const secondAlone = await runStandard(standard, [second], [second.map(() => 1)], [second.map((_, i) => i)], emptyCache(1));
  const secondStepAlone = await runStep(step, [second], [second.map((_, i) => i)], biasFromMask([second.map(() => 1)], second.length), emptyCache(1));
  report('packed prefill (6 + 4 tokens in one row): last-token logits equal the second sequence alone (standard)', maxAbsDiff(packed.logits.data, lastLogits(secondAlone.logits)));
  report('packed prefill: last-token logits equal the second sequence alone (step graph)', maxAbsDiff(packed.logits.data, secondStepAlone.logits.data));
  report(
    'packed prefill: new keys/values equal each sequence alone',
    Math.max(newKeyValueDiff(packed, firstAlone, [0], 0, first.length, 0), newKeyValueDiff(packed, secondAlone, [0], 0, second.length, first.length)),
  );

  // Decode one token of each sequence in one row of 2, over the packed cache.
  // The row's last column decides whose logits come back, so run both orders.
  const packedCache = appendCache(emptyCache(1), packed);
  const nextFirst = argmaxRows(lastLogits(firstAlone.logits), vocabSize)[0];
  const nextSecond = argmaxRows(lastLogits(secondAlone.logits), vocabSize)[0];
  const firstDecode = await runStandard(standard, [[nextFirst]], [new Array(first.length + 1).fill(1)], [[first.length]], presentCache(firstAlone));
  const secondDecode = await runStandard(standard, [[nextSecond]], [new Array(second.length + 1).fill(1)], [[second.length]], presentCache(secondAlone));
  for (const order of [[0, 1], [1, 0]]) {
    const tokens = order.map((which) => (which === 0 ? nextFirst : nextSecond));
    const positions = order.map((which) => (which === 0 ? first.length : second.length));
    // Past columns keep their segment; new column `total + i` belongs to order[i].
    const keySegment = (key) => (key < total ? segment(key) : order[key - total]);
    const bias = biasTensor(1, 2, total + 2, (row, query, key) => keySegment(key) === order[query] && (key < total || key === total + query));
    const outputs = await runStep(step, [tokens], [positions], bias, packedCache);
    const expected = order[1] === 0 ? firstDecode : secondDecode;
    report(`packed decode (order ${order.join(', ')}): last-token logits equal that sequence decoded alone`, maxAbsDiff(outputs.logits.data, lastLogits(expected.logits)));
  }
}

async function promptRows() {
  const tokenizerPath = path.join(modelDir, 'tokenizer.json');
  if (!existsSync(tokenizerPath)) {
    const next = tokenSource(31);
    return { source: 'pseudo-random ids (no tokenizer.json)', rows: [randomRow(next, 12), randomRow(next, 20), randomRow(next, 7)] };
  }
  const tokenizerJson = JSON.parse(await readFile(tokenizerPath, 'utf8'));
  const tokenizerConfig = JSON.parse(await readFile(path.join(modelDir, 'tokenizer_config.json'), 'utf8'));
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const prompts = [
    '<|sys|>user_agent zh\n<|facts|>order=none\n<|customer|>你好，我的外卖怎么还没到，等了四十分钟了\n<|turn|>',
    '<|sys|>rider_agent zh\n<|facts|>order=delivering eta=unknown\n<|rider|>路上堵车，大概还要十五分钟\n<|turn|>',
    '<|sys|>user_agent zh\n<|facts|>order=delivering eta=12\n<|customer|>能不能给我补偿\n<|turn|>',
  ];
  return { source: 'tokenizer.json', rows: prompts.map((text) => tokenizer.encode(text, { add_special_tokens: false }).ids) };
}

async function checkGreedy() {
  const { source, rows } = await promptRows();
  const { ids, mask, positions } = leftPad(rows);
  const seq = ids[0].length;
  const batch = rows.length;

  let standardOutputs = await runStandard(standard, ids, mask, positions, emptyCache(batch));
  let stepOutputs = await runStep(step, ids, positions, biasFromMask(mask, seq), emptyCache(batch));
  let stepCache = appendCache(emptyCache(batch), stepOutputs);
  let standardTokens = argmaxRows(lastLogits(standardOutputs.logits), vocabSize);
  let stepTokens = argmaxRows(stepOutputs.logits.data, vocabSize);
  const standardSequences = standardTokens.map((id) => [id]);
  const stepSequences = stepTokens.map((id) => [id]);
  let currentMask = mask;
  let currentPositions = positions.map((row) => row[row.length - 1]);
  let logitsDiff = maxAbsDiff(stepOutputs.logits.data, lastLogits(standardOutputs.logits));

  for (let stepIndex = 0; stepIndex < greedySteps; stepIndex++) {
    currentMask = currentMask.map((row) => [...row, 1]);
    currentPositions = currentPositions.map((position) => position + 1);
    const positionRows = currentPositions.map((position) => [position]);
    standardOutputs = await runStandard(standard, standardTokens.map((id) => [id]), currentMask, positionRows, presentCache(standardOutputs));
    stepOutputs = await runStep(step, stepTokens.map((id) => [id]), positionRows, biasFromMask(currentMask, 1), stepCache);
    stepCache = appendCache(stepCache, stepOutputs);
    logitsDiff = Math.max(logitsDiff, maxAbsDiff(stepOutputs.logits.data, lastLogits(standardOutputs.logits)));
    standardTokens = argmaxRows(lastLogits(standardOutputs.logits), vocabSize);
    stepTokens = argmaxRows(stepOutputs.logits.data, vocabSize);
    standardTokens.forEach((id, row) => standardSequences[row].push(id));
    stepTokens.forEach((id, row) => stepSequences[row].push(id));
  }
  const identical = JSON.stringify(standardSequences) === JSON.stringify(stepSequences);
  assert(
    `greedy decoding of ${batch} prompts from ${source} (lengths ${rows.map((row) => row.length).join(', ')}), ${greedySteps} steps: identical tokens`,
    identical,
    identical ? '' : `standard ${JSON.stringify(standardSequences)} step ${JSON.stringify(stepSequences)}`,
  );
  report('greedy decoding: logits along the way', logitsDiff);
}

async function checkFixture(fixturePath) {
  const fixture = JSON.parse(await readFile(fixturePath, 'utf8'));
  const fixtureTolerance = fixture.tolerance ?? tolerance;
  for (const testCase of fixture.cases) {
    const feeds = {
      input_ids: int64Tensor(testCase.input_ids),
      position_ids: int64Tensor(testCase.position_ids),
      attention_bias: new ort.Tensor('float32', Float32Array.from(testCase.attention_bias.flat(2)), [
        testCase.attention_bias.length,
        testCase.attention_bias[0].length,
        testCase.attention_bias[0][0].length,
      ]),
    };
    for (const [name, { dims, data }] of Object.entries(testCase.past)) feeds[name] = new ort.Tensor('float32', Float32Array.from(data), dims);
    const outputs = await step.run(feeds);
    for (const [name, expected] of Object.entries(testCase.expected)) {
      if (!(name in outputs)) {
        assert(`fixture ${testCase.name}: output ${name} exists`, false);
        continue;
      }
      report(`fixture ${testCase.name}: ${name} matches torch`, maxAbsDiff(outputs[name].data, expected), fixtureTolerance);
    }
  }
}

// ---------------------------------------------------------------- optimized graph

function histogram(nodes) {
  const counts = new Map();
  for (const node of nodes) counts.set(node.opType, (counts.get(node.opType) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([op, count]) => `${op} ${count}`).join(', ');
}

async function reportOptimizedGraphs() {
  const standardNodes = await graphNodes(standardOptimized);
  const stepNodes = await graphNodes(stepOptimized);
  console.log(`nodes after ONNX Runtime optimization (level all): standard ${standardNodes.length}, step ${stepNodes.length}`);
  console.log(`  standard: ${histogram(standardNodes)}`);
  console.log(`  step:     ${histogram(stepNodes)}`);
  for (const file of options.compare) {
    const optimizedPath = path.join(scratchDir, `${path.basename(file, '.onnx')}.optimized.onnx`);
    const session = await ort.InferenceSession.create(file, sessionOptions(optimizedPath));
    await session.release();
    console.log(`  ${path.basename(file, '.onnx')}: ${(await graphNodes(optimizedPath)).length} nodes`);
  }

  // Only MatMul kernels, Shape and Unsqueeze may read the past tensors. FusedMatMul
  // takes the keys with transB, and ONNX Runtime runs Unsqueeze as a view of its input.
  // A 16-row call at 1,000 past tokens took 5.8 ms with it and 7.9 ms without it, so it
  // cannot be copying the 65 MB of keys and values. A Transpose or Concat would copy them.
  const readers = new Set();
  for (const node of stepNodes) {
    for (const input of node.inputs) if (/^past_(key|value)\.\d+$/.test(input)) readers.add(node.opType);
  }
  const copying = [...readers].filter((op) => !['MatMul', 'FusedMatMul', 'Shape', 'Unsqueeze'].includes(op));
  assert('no node copies the past keys or values in the optimized step graph', copying.length === 0, `readers: ${[...readers].join(', ')}`);
}

// ---------------------------------------------------------------- timing

function randomTensor(dims, seed) {
  const next = tokenSource(seed);
  const size = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = (next() / vocabSize - 0.5) * 2;
  return new ort.Tensor('float32', data, dims);
}

function randomCache(batch, past) {
  return Array.from({ length: layers }, (_, layer) => ({
    key: randomTensor([batch, kvHeads, past, headDim], 2 * layer + 1),
    value: randomTensor([batch, kvHeads, past, headDim], 2 * layer + 2),
  }));
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Prints the median wall time of session.run per graph and shape, feed building excluded.
 * Only one session exists at a time, so no idle session's spinning threads take
 * the cores. The graphs take turns for --timing-rounds rounds, and the printed
 * value is the median over rounds of each round's median, so that load from
 * other processes hits every graph alike.
 */
async function timeGraphs(paths, rounds) {
  const shapes = [
    { label: 'decode batch 1, past 100', batch: 1, seq: 1, past: 100, runs: 60 },
    { label: 'decode batch 16, past 100', batch: 16, seq: 1, past: 100, runs: 40 },
    { label: 'decode batch 64, past 100', batch: 64, seq: 1, past: 100, runs: 20 },
    { label: 'decode batch 1, past 1000', batch: 1, seq: 1, past: 1000, runs: 40 },
    { label: 'decode batch 16, past 1000', batch: 16, seq: 1, past: 1000, runs: 20 },
    { label: 'prefill batch 1, 256 tokens', batch: 1, seq: 256, past: 0, runs: 8 },
  ];
  const feeds = shapes.map((shape) => {
    const next = tokenSource(shape.batch * 1000 + shape.past);
    const ids = Array.from({ length: shape.batch }, () => randomRow(next, shape.seq));
    const mask = ids.map(() => new Array(shape.past + shape.seq).fill(1));
    return {
      ids,
      mask,
      positions: ids.map((row) => row.map((_, index) => shape.past + index)),
      cache: shape.past > 0 ? randomCache(shape.batch, shape.past) : emptyCache(shape.batch),
      bias: biasFromMask(mask, shape.seq),
    };
  });

  // roundMedians[graph][shape] lists one median per round.
  const roundMedians = paths.map(() => shapes.map(() => []));
  for (let round = 0; round < rounds; round++) {
    for (const [graphIndex, [, graphPath]] of paths.entries()) {
      const session = await ort.InferenceSession.create(graphPath, sessionOptions());
      const isStandard = session.inputNames.includes('attention_mask');
      for (const [shapeIndex, shape] of shapes.entries()) {
        const { ids, mask, positions, cache, bias } = feeds[shapeIndex];
        const run = isStandard
          ? () => runStandard(session, ids, mask, positions, cache)
          : () => runStep(session, ids, positions, bias, cache);
        for (let warmup = 0; warmup < 3; warmup++) await run();
        const times = [];
        for (let call = 0; call < shape.runs; call++) {
          const started = performance.now();
          await run();
          times.push(performance.now() - started);
        }
        roundMedians[graphIndex][shapeIndex].push(median(times));
      }
      await session.release();
    }
  }

  console.log(`median time per call, ${threads} intra-op threads, ${rounds} rounds (ms):`);
  console.log(`  ${'shape'.padEnd(30)}${paths.map(([label]) => label.padStart(20)).join('')}`);
  for (const [shapeIndex, shape] of shapes.entries()) {
    const cells = paths.map((_, graphIndex) => median(roundMedians[graphIndex][shapeIndex]).toFixed(2).padStart(20));
    console.log(`  ${shape.label.padEnd(30)}${cells.join('')}`);
  }
}

// ---------------------------------------------------------------- main

console.log(`standard graph ${standardPath}; step graph ${stepPath}${hasDropped ? ' (with expert_dropped)' : ''}`);
if (hasDropped) {
  // Dropped assignments depend on which tokens share a call, so the graph
  // matches model.onnx only when nothing is dropped.
  console.log('the step graph has an expert capacity: only --fixture checks run');
} else {
  await checkPaddedPrefillAndDecode(6);
  await checkFullyMaskedRow();
  await checkPacked();
  await checkGreedy();
}
if (options.fixture) await checkFixture(options.fixture);
await reportOptimizedGraphs();
await standard.release();
await step.release();
await rm(scratchDir, { recursive: true, force: true });

if (!options['no-timing']) {
  const paths = [['standard', standardPath], ['step', stepPath], ...options.compare.map((file) => [path.basename(file, '.onnx'), file])];
  await timeGraphs(paths, Number(options['timing-rounds']));
}

if (failures.length > 0) {
  console.error(`${failures.length} check(s) failed: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('all step graph checks passed');
