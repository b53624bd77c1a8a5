import { describe, expect, it } from 'vitest';
import { DecodeBatch, type BatchRow } from '../../engine/decode-batch.ts';
import { pageTokens, SequenceCache, viewLength, type LayerView } from '../../engine/kv-cache.ts';
import { applyRotation, type ModelShape } from '../../engine/rotary.ts';
import { chooseViews, defaultSparseAttention } from '../../engine/sparse.ts';
import { maskedBias } from '../../engine/step-model.ts';

const shape: ModelShape = { numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, ropeTheta: 10000 };
const tokenFloats = shape.numKvHeads * shape.headDim;

/** A value that encodes layer, kind, head, position and dimension, so misplaced copies show. */
const marker = (layer: number, kind: number, head: number, position: number, d: number) => layer * 1e6 + kind * 5e5 + head * 1e5 + position * 10 + d / 10;

/** Appends `count` tokens whose keys and values are markers of their absolute positions. */
function fill(cache: SequenceCache, count: number): void {
  const from = cache.length;
  const keys = Array.from({ length: shape.numLayers }, () => new Float32Array(count * tokenFloats));
  const values = Array.from({ length: shape.numLayers }, () => new Float32Array(count * tokenFloats));
  for (let layer = 0; layer < shape.numLayers; layer++) {
    for (let head = 0; head < shape.numKvHeads; head++) {
      for (let t = 0; t < count; t++) {
        for (let d = 0; d < shape.headDim; d++) {
          keys[layer]![(head * count + t) * shape.headDim + d] = marker(layer, 0, head, from + t, d);
          values[layer]![(head * count + t) * shape.headDim + d] = marker(layer, 1, head, from + t, d);
        }
      }
    }
  }
  cache.append(keys, values, 0, count, 0, count);
}

/** Rotates one vector to a position from scratch, as the graph does for a new key. */
function ropeAt(vector: number[], position: number): Float32Array {
  const out = Float32Array.from(vector);
  applyRotation(out, 0, 1, vector.length, position, shape.ropeTheta);
  return out;
}

describe('applyRotation', () => {
  it('moves a rotated key by the difference of positions', () => {
    const key = Array.from({ length: 8 }, (_, i) => Math.sin(i + 1));
    const at100 = ropeAt(key, 100);
    applyRotation(at100, 0, 1, 8, 4000, shape.ropeTheta);
    const at4100 = ropeAt(key, 4100);
    for (let d = 0; d < 8; d++) expect(at100[d]).toBeCloseTo(at4100[d]!, 4);
  });

  it('keeps query-key scores that depend only on distance', () => {
    const query = Array.from({ length: 8 }, (_, i) => Math.cos(i * 0.7));
    const key = Array.from({ length: 8 }, (_, i) => Math.sin(i * 1.3));
    const score = (q: Float32Array, k: Float32Array) => q.reduce((sum, v, i) => sum + v * k[i]!, 0);
    expect(score(ropeAt(query, 30_000), ropeAt(key, 29_500))).toBeCloseTo(score(ropeAt(query, 700), ropeAt(key, 200)), 3);
  });
});

describe('SequenceCache', () => {
  it('copies a view across page boundaries into slot order', () => {
    const cache = new SequenceCache(shape);
    fill(cache, 100);
    expect(cache.length).toBe(100);
    expect(cache.pageCount).toBe(Math.ceil(100 / pageTokens));
    const view: LayerView = [
      { start: 0, end: 5, shift: 0 },
      { start: 30, end: 70, shift: 0 },
    ];
    const slots = 48;
    const keys = new Float32Array(2 * shape.numKvHeads * slots * shape.headDim);
    const values = new Float32Array(keys.length);
    const next = cache.copyView(1, view, keys, values, 1, slots, 0);
    expect(next).toBe(45);
    const at = (head: number, slot: number, d: number) => ((1 * shape.numKvHeads + head) * slots + slot) * shape.headDim + d;
    expect(keys[at(1, 4, 3)]).toBeCloseTo(marker(1, 0, 1, 4, 3), 0);
    expect(keys[at(1, 5, 3)]).toBeCloseTo(marker(1, 0, 1, 30, 3), 0);
    expect(values[at(0, 44, 7)]).toBeCloseTo(marker(1, 1, 0, 69, 7), 0);
    // Row 0 is untouched.
    expect(keys.subarray(0, shape.numKvHeads * slots * shape.headDim).every((v) => v === 0)).toBe(true);
  });

  it('counts bytes by page', () => {
    const cache = new SequenceCache(shape);
    fill(cache, 33);
    expect(cache.bytes).toBe(2 * shape.numLayers * 2 * shape.numKvHeads * pageTokens * shape.headDim * 4);
  });
});

describe('chooseViews', () => {
  const options = defaultSparseAttention;

  it('attends to the whole context while it fits the trained positions', () => {
    const cache = new SequenceCache(shape);
    fill(cache, 500);
    const views = chooseViews({ cache, numLayers: 2, numHeads: 4, maxPositions: 1024, lookahead: 32, options });
    expect(views).toEqual([[{ start: 0, end: 500, shift: 0 }], [{ start: 0, end: 500, shift: 0 }]]);
  });

  it('bounds a long context within the trained distance', () => {
    const cache = new SequenceCache(shape);
    fill(cache, 5000);
    const views = chooseViews({ cache, numLayers: 2, numHeads: 4, maxPositions: 1024, lookahead: 32, options });
    for (const view of views) {
      expect(viewLength(view)).toBeLessThanOrEqual(options.sinkTokens + options.windowTokens + options.selectedTokens);
      expect(view[0]).toMatchObject({ start: 0, end: options.sinkTokens });
      expect(view[view.length - 1]).toMatchObject({ end: 5000, shift: 0 });
      // After shifting, old tokens sit just before the window and keep their order.
      const placed = view.flatMap((s) => [s.start + s.shift, s.end + s.shift]);
      expect([...placed].sort((a, b) => a - b)).toEqual(placed);
      expect(5000 + 32 - placed[0]!).toBeLessThanOrEqual(1024);
    }
  });

  it('picks the pages whose keys score highest against the query', () => {
    const cache = new SequenceCache(shape);
    fill(cache, 3000);
    // Marker keys grow with position, so a negative query favours the oldest pages.
    const query = new Float32Array(shape.numHeads * shape.headDim).fill(-1);
    const covers = (view: LayerView, position: number) => view.some((s) => s.start <= position && position < s.end);
    const [view] = chooseViews({ cache, numLayers: 1, numHeads: 4, maxPositions: 1024, lookahead: 32, options, queries: [query] });
    expect(covers(view!, options.sinkTokens)).toBe(true);
    expect(covers(view!, 2000)).toBe(false);
    // Without a query, the pages just before the window are chosen.
    const [recent] = chooseViews({ cache, numLayers: 1, numHeads: 4, maxPositions: 1024, lookahead: 32, options });
    expect(covers(recent!, options.sinkTokens)).toBe(false);
    expect(covers(recent!, 3000 - options.windowTokens - 1)).toBe(true);
  });
});

class Row implements BatchRow {
  cache = new SequenceCache(shape);
  constructor(length: number) {
    fill(this.cache, length);
  }
  views(): LayerView[] {
    return chooseViews({ cache: this.cache, numLayers: 2, numHeads: 4, maxPositions: 1024, lookahead: 32, options: defaultSparseAttention });
  }
  viewsExpired(): boolean {
    return false;
  }
}

/** Builds one decode step's outputs: a token per row whose floats mark its row's next position. */
function stepOutput(batch: DecodeBatch<Row>): { keys: Float32Array[]; values: Float32Array[] } {
  const keys = Array.from({ length: shape.numLayers }, () => new Float32Array(batch.size * tokenFloats));
  const values = Array.from({ length: shape.numLayers }, () => new Float32Array(batch.size * tokenFloats));
  batch.rows.forEach((row, index) => {
    for (let layer = 0; layer < shape.numLayers; layer++) {
      for (let head = 0; head < shape.numKvHeads; head++) {
        for (let d = 0; d < shape.headDim; d++) {
          keys[layer]![(index * shape.numKvHeads + head) * shape.headDim + d] = marker(layer, 0, head, row.cache.length, d);
          values[layer]![(index * shape.numKvHeads + head) * shape.headDim + d] = marker(layer, 1, head, row.cache.length, d);
        }
      }
    }
  });
  return { keys, values };
}

/** Checks that every row's visible slots hold its positions 0..n-1 in order and the rest are masked. */
function expectConsistent(batch: DecodeBatch<Row>): void {
  const { pastKeys, bias, past } = batch.prepare();
  batch.rows.forEach((row, index) => {
    const length = row.cache.length;
    for (let slot = 0; slot < past; slot++) {
      const visible = bias[index * (past + 1) + slot] === 0;
      expect(visible).toBe(slot < length);
      if (visible) expect(pastKeys[1]![((index * shape.numKvHeads + 1) * past + slot) * shape.headDim + 2]).toBeCloseTo(marker(1, 0, 1, slot, 2), 0);
    }
    expect(bias[index * (past + 1) + past]).toBe(0);
  });
  expect(bias.includes(maskedBias) || batch.rows.every((r) => r.cache.length === past)).toBe(true);
}

describe('DecodeBatch', () => {
  it('keeps rows intact through joins, leaves and in-place appends', () => {
    const batch = new DecodeBatch<Row>(shape, 4);
    const rows = [new Row(10), new Row(40), new Row(3)];
    rows.forEach((row) => batch.join(row));
    expectConsistent(batch);
    for (let step = 0; step < 40; step++) {
      if (step === 5) batch.leave(rows[0]!);
      if (step === 9) batch.join(new Row(7));
      if (step === 20) batch.leave(rows[2]!);
      batch.prepare();
      const { keys, values } = stepOutput(batch);
      batch.commit(keys, values);
      expectConsistent(batch);
    }
    expect(batch.size).toBe(2);
  });

  it('lays the buffer out again only every few dozen steps', () => {
    const batch = new DecodeBatch<Row>(shape, 4);
    for (const length of [5, 50, 120, 64]) batch.join(new Row(length));
    for (let step = 0; step < 96; step++) {
      batch.prepare();
      const { keys, values } = stepOutput(batch);
      batch.commit(keys, values);
    }
    expect(batch.layouts).toBeLessThanOrEqual(4);
  });
});
