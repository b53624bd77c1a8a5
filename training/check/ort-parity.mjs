#!/usr/bin/env node
// Replays the parity fixture written by training/trainer/export.py in
// onnxruntime-node: prefill with past length 0, then one decode step fed with
// the returned presents, on batch 1 and on a left-padded batch of 2. Logits must
// match torch within the fixture's tolerance at real (unpadded) positions, and
// each left-padded row must match the same row run alone. Then prints the time
// of a decode step at batch 1 and batch 16.
//
//   node training/check/ort-parity.mjs --model-dir models/sanfang-moe \
//     [--fixture training/out/onnx-parity-fixture.json] [--threads 2]
//
// Exits 1 when a check fails.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';

const { values: options } = parseArgs({
  options: {
    'model-dir': { type: 'string' },
    fixture: { type: 'string', default: 'training/out/onnx-parity-fixture.json' },
    threads: { type: 'string', default: '2' },
    'timing-context': { type: 'string', default: '128' },
    'timing-steps': { type: 'string', default: '20' },
  },
});

if (!options['model-dir']) {
  console.error('missing required option --model-dir, the model directory that contains onnx/model.onnx');
  process.exit(2);
}

const modelPath = path.join(options['model-dir'], 'onnx', 'model.onnx');
const fixture = JSON.parse(await readFile(options.fixture, 'utf8'));
const threads = Number(options.threads);
const timingContext = Number(options['timing-context']);
const timingSteps = Number(options['timing-steps']);
const tolerance = fixture.tolerance;
const failures = [];

const session = await ort.InferenceSession.create(modelPath, {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  graphOptimizationLevel: 'all',
});

function int64Tensor(rows) {
  const flat = rows.flat().map((value) => BigInt(value));
  return new ort.Tensor('int64', BigInt64Array.from(flat), [rows.length, rows[0].length]);
}

function emptyPast(batchSize) {
  const feeds = {};
  const dims = [batchSize, fixture.num_key_value_heads, 0, fixture.head_dim];
  for (let layer = 0; layer < fixture.num_hidden_layers; layer++) {
    feeds[`past_key_values.${layer}.key`] = new ort.Tensor('float32', new Float32Array(0), dims);
    feeds[`past_key_values.${layer}.value`] = new ort.Tensor('float32', new Float32Array(0), dims);
  }
  return feeds;
}

function pastFromPresents(outputs) {
  const feeds = {};
  for (let layer = 0; layer < fixture.num_hidden_layers; layer++) {
    feeds[`past_key_values.${layer}.key`] = outputs[`present.${layer}.key`];
    feeds[`past_key_values.${layer}.value`] = outputs[`present.${layer}.value`];
  }
  return feeds;
}

async function runStep(step, past) {
  return session.run({
    input_ids: int64Tensor(step.input_ids),
    attention_mask: int64Tensor(step.attention_mask),
    position_ids: int64Tensor(step.position_ids),
    ...past,
  });
}

/** Returns the logits of one row and position from a [batch, seq, vocab] tensor. */
function logitsAt(tensor, row, position) {
  const [, seq, vocab] = tensor.dims;
  const start = (row * seq + position) * vocab;
  return tensor.data.subarray(start, start + vocab);
}

function maxAbsDiff(left, right) {
  let max = 0;
  for (let i = 0; i < left.length; i++) max = Math.max(max, Math.abs(left[i] - right[i]));
  return max;
}

/**
 * Returns the largest difference to the torch logits over positions whose
 * query is a real token. The last `seq` mask columns belong to the new tokens.
 */
function diffAtRealPositions(tensor, torchLogits, attentionMask) {
  let max = 0;
  torchLogits.forEach((rowLogits, row) => {
    const seq = rowLogits.length;
    const maskRow = attentionMask[row].slice(-seq);
    rowLogits.forEach((expected, position) => {
      if (maskRow[position] === 1) max = Math.max(max, maxAbsDiff(logitsAt(tensor, row, position), expected));
    });
  });
  return max;
}

function report(label, diff) {
  const ok = diff <= tolerance;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${label}: max |diff| ${diff.toExponential(2)} (tolerance ${tolerance})`);
  if (!ok) failures.push(label);
}

/** Runs one left-padded row alone and compares it with its row in the batch. */
async function checkRowAlone(testCase, row, batchPrefill, batchDecode) {
  const mask = testCase.prefill.attention_mask[row];
  const padCount = mask.indexOf(1);
  const ids = testCase.prefill.input_ids[row].slice(padCount);
  const realLength = ids.length;
  const alonePrefill = {
    input_ids: [ids],
    attention_mask: [ids.map(() => 1)],
    position_ids: [ids.map((_, index) => index)],
  };
  const prefill = await runStep(alonePrefill, emptyPast(1));
  let prefillDiff = 0;
  for (let position = 0; position < realLength; position++) {
    const batched = logitsAt(batchPrefill.logits, row, padCount + position);
    prefillDiff = Math.max(prefillDiff, maxAbsDiff(logitsAt(prefill.logits, 0, position), batched));
  }
  report(`${testCase.name} row ${row} prefill equals the row alone`, prefillDiff);

  const aloneDecode = {
    input_ids: [testCase.decode.input_ids[row]],
    attention_mask: [new Array(realLength + 1).fill(1)],
    position_ids: [[realLength]],
  };
  const decode = await runStep(aloneDecode, pastFromPresents(prefill));
  const decodeDiff = maxAbsDiff(logitsAt(decode.logits, 0, 0), logitsAt(batchDecode.logits, row, 0));
  report(`${testCase.name} row ${row} decode equals the row alone`, decodeDiff);
}

for (const testCase of fixture.cases) {
  const batchSize = testCase.prefill.input_ids.length;
  const prefill = await runStep(testCase.prefill, emptyPast(batchSize));
  report(
    `${testCase.name} prefill (batch ${batchSize}, past 0) matches torch`,
    diffAtRealPositions(prefill.logits, testCase.prefill.logits, testCase.prefill.attention_mask),
  );

  const decode = await runStep(testCase.decode, pastFromPresents(prefill));
  report(
    `${testCase.name} decode step matches torch`,
    diffAtRealPositions(decode.logits, testCase.decode.logits, testCase.decode.attention_mask),
  );

  for (let row = 0; row < batchSize; row++) {
    if (testCase.prefill.attention_mask[row].includes(0)) await checkRowAlone(testCase, row, prefill, decode);
  }
}

/** Returns a deterministic pseudo-random token id source (a 32-bit LCG). */
function tokenSource(seed) {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % fixture.vocab_size;
  };
}

function argmaxIds(logits) {
  const [batchSize, seq, vocab] = logits.dims;
  const ids = [];
  for (let row = 0; row < batchSize; row++) {
    const values = logitsAt(logits, row, seq - 1);
    let best = 0;
    for (let i = 1; i < vocab; i++) if (values[i] > values[best]) best = i;
    ids.push([best]);
  }
  return ids;
}

/** Returns the mean wall time of a greedy decode step, feed building and argmax included. */
async function timeDecode(batchSize) {
  const nextToken = tokenSource(batchSize);
  const prompt = Array.from({ length: batchSize }, () => Array.from({ length: timingContext }, nextToken));
  let outputs = await runStep(
    {
      input_ids: prompt,
      attention_mask: prompt.map((row) => row.map(() => 1)),
      position_ids: prompt.map((row) => row.map((_, index) => index)),
    },
    emptyPast(batchSize),
  );

  const warmupSteps = 2;
  let length = timingContext;
  let started = 0;
  for (let step = 0; step < warmupSteps + timingSteps; step++) {
    if (step === warmupSteps) started = performance.now();
    const decodeStep = {
      input_ids: argmaxIds(outputs.logits),
      attention_mask: Array.from({ length: batchSize }, () => new Array(length + 1).fill(1)),
      position_ids: Array.from({ length: batchSize }, () => [length]),
    };
    outputs = await runStep(decodeStep, pastFromPresents(outputs));
    length++;
  }
  return (performance.now() - started) / timingSteps;
}

for (const batchSize of [1, 16]) {
  const stepMs = await timeDecode(batchSize);
  const tokensPerSecond = (batchSize * 1000) / stepMs;
  console.log(
    `decode step at batch ${batchSize}, context ${timingContext}-${timingContext + timingSteps + 1}, ` +
      `${threads} intra-op threads: ${stepMs.toFixed(2)} ms (${tokensPerSecond.toFixed(0)} tokens/s)`,
  );
}

await session.release();

if (failures.length > 0) {
  console.error(`${failures.length} parity check(s) failed: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('all parity checks passed');
