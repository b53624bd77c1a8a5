/**
 * The running decode batch: one slot buffer per layer for keys and one for values, laid out
 * [rows, kvHeads, slots, headDim], plus the additive attention bias [rows, 1, slots + 1]. Each
 * row contains its sequence's view in slots 0..fill-1, and a decode step's new token goes into
 * slot `fill` in place. A row joins by filling the next free row and leaves by moving the last
 * row into its place, so neither touches the other rows. A row whose view changes (its sparse
 * pages are chosen again, or its dense context outgrows the trained positions) is rewritten
 * alone. The whole buffer is laid out again only when a row runs out of slots, and `slots`
 * leaves room for `headroom` tokens, so that happens every few dozen steps.
 */
import { bytesPerToken, viewLength, type LayerView, type SequenceCache } from './kv-cache.ts';
import type { ModelShape } from './rotary.ts';
import { maskedBias } from './step-model.ts';

export interface BatchRow {
  cache: SequenceCache;
  /** Chooses the row's views for the next `lookahead` tokens. */
  views(lookahead: number): LayerView[];
  /** True when the row's current views no longer cover the next token correctly. */
  viewsExpired(): boolean;
}

/** New tokens a row can take after a layout before it needs another. */
export const headroom = 32;

/** Slots per row of a layout whose longest view has `viewTokens` tokens. */
export function slotsFor(viewTokens: number): number {
  return Math.ceil((viewTokens + headroom) / headroom) * headroom;
}

/** Bytes of the key, value and bias buffers that a layout of `slots` slots allocates for `maxRows` rows. */
export function slotBufferBytes(shape: Pick<ModelShape, 'numLayers' | 'numKvHeads' | 'headDim'>, maxRows: number, slots: number): number {
  return maxRows * (slots * bytesPerToken(shape) + (slots + 1) * Float32Array.BYTES_PER_ELEMENT);
}

export class DecodeBatch<Row extends BatchRow> {
  rows: Row[] = [];
  slots = 0;
  private fill: number[] = [];
  private keys: Float32Array[] = [];
  private values: Float32Array[] = [];
  private bias = new Float32Array(0);
  private stale = true;
  layouts = 0;

  constructor(
    private readonly shape: ModelShape,
    private readonly maxRows: number,
  ) {}

  get size(): number {
    return this.rows.length;
  }

  /** Bytes of the slot buffers. */
  get bytes(): number {
    return (this.keys.reduce((sum, k) => sum + k.byteLength, 0) + this.values.reduce((sum, v) => sum + v.byteLength, 0)) + this.bias.byteLength;
  }

  join(row: Row): void {
    this.rows.push(row);
    this.fill.push(0);
    if (!this.stale) this.placeRow(this.rows.length - 1);
  }

  leave(row: Row): void {
    const index = this.rows.indexOf(row);
    if (index === -1) return;
    const last = this.rows.length - 1;
    if (index !== last && !this.stale) {
      const { numKvHeads, headDim } = this.shape;
      const rowFloats = numKvHeads * this.slots * headDim;
      for (const buffer of [...this.keys, ...this.values]) buffer.copyWithin(index * rowFloats, last * rowFloats, (last + 1) * rowFloats);
      const width = this.slots + 1;
      this.bias.copyWithin(index * width, last * width, (last + 1) * width);
    }
    this.rows[index] = this.rows[last]!;
    this.fill[index] = this.fill[last]!;
    this.rows.pop();
    this.fill.pop();
  }

  /** Inputs of the next decode step: past buffers, bias and slot count. Lays the batch out first if needed. */
  prepare(): { pastKeys: Float32Array[]; pastValues: Float32Array[]; bias: Float32Array; past: number } {
    if (!this.stale) {
      // A row whose views expired is rewritten alone when its new view fits the slots.
      this.rows.forEach((row, index) => {
        if (!this.stale && row.viewsExpired()) this.placeRow(index);
      });
    }
    if (this.stale) this.layout();
    const floats = this.rows.length * (this.slots + 1);
    return { pastKeys: this.keys, pastValues: this.values, bias: this.bias.subarray(0, floats), past: this.slots };
  }

  /** Writes the step's new keys and values ([rows, kvHeads, 1, headDim] per layer) into each row's next slot. */
  commit(newKeys: Float32Array[], newValues: Float32Array[]): void {
    const { numLayers, numKvHeads, headDim } = this.shape;
    this.rows.forEach((row, index) => {
      const slot = this.fill[index]!;
      for (let layer = 0; layer < numLayers; layer++) {
        for (let head = 0; head < numKvHeads; head++) {
          const source = (index * numKvHeads + head) * headDim;
          const target = ((index * numKvHeads + head) * this.slots + slot) * headDim;
          // Plain loops: for one head's 64 floats they beat subarray() plus set().
          const keys = this.keys[layer]!;
          const values = this.values[layer]!;
          const fromKeys = newKeys[layer]!;
          const fromValues = newValues[layer]!;
          for (let d = 0; d < headDim; d++) {
            keys[target + d] = fromKeys[source + d]!;
            values[target + d] = fromValues[source + d]!;
          }
        }
      }
      this.bias[index * (this.slots + 1) + slot] = 0;
      this.fill[index] = slot + 1;
      row.cache.append(newKeys, newValues, index, 1, 0, 1);
      if (slot + 1 >= this.slots) this.stale = true;
    });
  }

  /** Writes one row's views into its slots, or marks the batch stale when they do not fit. */
  private placeRow(index: number): void {
    const views = this.rows[index]!.views(headroom);
    if (viewLength(views[0]!) + 1 <= this.slots) this.writeRow(index, views);
    else this.stale = true;
  }

  private layout(): void {
    const { numLayers, numKvHeads, headDim } = this.shape;
    const views = this.rows.map((row) => row.views(headroom));
    const longest = views.reduce((max, v) => Math.max(max, viewLength(v[0]!)), 0);
    this.slots = slotsFor(longest);
    const floats = this.maxRows * numKvHeads * this.slots * headDim;
    if ((this.keys[0]?.length ?? 0) < floats) {
      this.keys = Array.from({ length: numLayers }, () => new Float32Array(floats));
      this.values = Array.from({ length: numLayers }, () => new Float32Array(floats));
    }
    if (this.bias.length < this.maxRows * (this.slots + 1)) this.bias = new Float32Array(this.maxRows * (this.slots + 1));
    views.forEach((rowViews, index) => this.writeRow(index, rowViews));
    this.stale = false;
    this.layouts++;
  }

  private writeRow(index: number, views: LayerView[]): void {
    const row = this.rows[index]!;
    let filled = 0;
    views.forEach((view, layer) => {
      filled = row.cache.copyView(layer, view, this.keys[layer]!, this.values[layer]!, index, this.slots, 0);
    });
    this.fill[index] = filled;
    const width = this.slots + 1;
    this.bias.fill(0, index * width, index * width + filled);
    this.bias.fill(maskedBias, index * width + filled, index * width + this.slots);
    this.bias[index * width + this.slots] = 0;
  }
}
