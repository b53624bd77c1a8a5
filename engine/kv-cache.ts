/**
 * KV storage. Each sequence keeps its keys and values in fixed-size pages, one set per layer,
 * and never copies them after they are written. A running batch reads a *view* of each
 * sequence (its whole cache, or a sparse selection of pages) into one slot buffer per layer,
 * laid out [batch, kvHeads, slots, headDim] as the step graph takes it. New tokens are written
 * into free slots in place, so a decode step copies only the new token's keys and values.
 */
import { applyRotation, type ModelShape } from './rotary.ts';

export const pageTokens = 32;

/** A contiguous run of cached tokens copied into a view, with keys rotated by `shift` positions. */
export interface ViewSegment {
  start: number;
  end: number;
  shift: number;
}

/** The segments one layer of one sequence attends to, in slot order. */
export type LayerView = ViewSegment[];

export function viewLength(view: LayerView): number {
  let total = 0;
  for (const segment of view) total += segment.end - segment.start;
  return total;
}

/**
 * One sequence's keys and values. Pages hold [kvHeads, pageTokens, headDim] floats. Keys are
 * stored post-RoPE at their absolute positions, as the graph returns them.
 */
export class SequenceCache {
  length = 0;
  private readonly keyPages: Float32Array[][];
  private readonly valuePages: Float32Array[][];
  /** Per layer and full page: element-wise min and max of the page's keys, [kvHeads, headDim] each. */
  private readonly keyMin: Float32Array[][];
  private readonly keyMax: Float32Array[][];

  constructor(private readonly shape: ModelShape) {
    this.keyPages = Array.from({ length: shape.numLayers }, () => []);
    this.valuePages = Array.from({ length: shape.numLayers }, () => []);
    this.keyMin = Array.from({ length: shape.numLayers }, () => []);
    this.keyMax = Array.from({ length: shape.numLayers }, () => []);
  }

  get pageCount(): number {
    return this.keyPages[0]!.length;
  }

  /** Bytes of key/value pages held. */
  get bytes(): number {
    return this.pageCount * this.shape.numLayers * 2 * pageBytes(this.shape);
  }

  /**
   * Appends `count` tokens for every layer from graph outputs laid out [rows, kvHeads, seq, headDim]:
   * row `row`, positions `from`..`from + count - 1` of a `seq`-long output.
   */
  append(newKeys: Float32Array[], newValues: Float32Array[], row: number, seq: number, from: number, count: number): void {
    const { numLayers, numKvHeads, headDim } = this.shape;
    for (let t = 0; t < count; t++) {
      const position = this.length + t;
      const page = Math.floor(position / pageTokens);
      const inPage = position % pageTokens;
      for (let layer = 0; layer < numLayers; layer++) {
        if (page === this.keyPages[layer]!.length) {
          this.keyPages[layer]!.push(new Float32Array(numKvHeads * pageTokens * headDim));
          this.valuePages[layer]!.push(new Float32Array(numKvHeads * pageTokens * headDim));
        }
        const keyPage = this.keyPages[layer]![page]!;
        const valuePage = this.valuePages[layer]![page]!;
        for (let head = 0; head < numKvHeads; head++) {
          const source = ((row * numKvHeads + head) * seq + from + t) * headDim;
          const target = (head * pageTokens + inPage) * headDim;
          const fromKeys = newKeys[layer]!;
          const fromValues = newValues[layer]!;
          for (let d = 0; d < headDim; d++) {
            keyPage[target + d] = fromKeys[source + d]!;
            valuePage[target + d] = fromValues[source + d]!;
          }
        }
      }
    }
    this.length += count;
  }

  /**
   * Copies `view` of one layer into slots starting at `slot` of a [rows, kvHeads, slots, headDim]
   * buffer pair, rotating keys of shifted segments. Returns the next free slot.
   */
  copyView(layer: number, view: LayerView, keys: Float32Array, values: Float32Array, row: number, slots: number, slot: number): number {
    const { numKvHeads, headDim } = this.shape;
    for (const segment of view) {
      let position = segment.start;
      while (position < segment.end) {
        const page = Math.floor(position / pageTokens);
        const inPage = position % pageTokens;
        const count = Math.min(segment.end - position, pageTokens - inPage);
        const keyPage = this.keyPages[layer]![page]!;
        const valuePage = this.valuePages[layer]![page]!;
        for (let head = 0; head < numKvHeads; head++) {
          const source = (head * pageTokens + inPage) * headDim;
          const target = ((row * numKvHeads + head) * slots + slot) * headDim;
          keys.set(keyPage.subarray(source, source + count * headDim), target);
          values.set(valuePage.subarray(source, source + count * headDim), target);
          if (segment.shift !== 0) applyRotation(keys, target, count, headDim, segment.shift, this.shape.ropeTheta);
        }
        position += count;
        slot += count;
      }
    }
    return slot;
  }

  /**
   * Returns, for each full page in [firstPage, endPage), a Quest-style upper bound of the
   * attention score of `query` (one layer's [heads, headDim], post-RoPE). For each query head
   * it sums max(q·min, q·max) over dimensions against its KV head's page summary, then sums
   * over heads.
   */
  pageScores(layer: number, query: Float32Array, numHeads: number, firstPage: number, endPage: number): Float64Array {
    const { numKvHeads, headDim } = this.shape;
    const group = numHeads / numKvHeads;
    this.summarise(layer, endPage);
    const scores = new Float64Array(endPage - firstPage);
    for (let page = firstPage; page < endPage; page++) {
      const min = this.keyMin[layer]![page]!;
      const max = this.keyMax[layer]![page]!;
      let score = 0;
      for (let head = 0; head < numHeads; head++) {
        const kvHead = Math.floor(head / group);
        const q = head * headDim;
        const k = kvHead * headDim;
        for (let d = 0; d < headDim; d++) {
          const value = query[q + d]!;
          score += Math.max(value * min[k + d]!, value * max[k + d]!);
        }
      }
      scores[page - firstPage] = score;
    }
    return scores;
  }

  /** Computes min/max summaries of full pages up to `endPage` that do not have one yet. */
  private summarise(layer: number, endPage: number): void {
    const { numKvHeads, headDim } = this.shape;
    const mins = this.keyMin[layer]!;
    const maxes = this.keyMax[layer]!;
    for (let page = mins.length; page < endPage; page++) {
      const keys = this.keyPages[layer]![page]!;
      const min = new Float32Array(numKvHeads * headDim).fill(Infinity);
      const max = new Float32Array(numKvHeads * headDim).fill(-Infinity);
      for (let head = 0; head < numKvHeads; head++) {
        for (let t = 0; t < pageTokens; t++) {
          const base = (head * pageTokens + t) * headDim;
          for (let d = 0; d < headDim; d++) {
            const value = keys[base + d]!;
            const index = head * headDim + d;
            if (value < min[index]!) min[index] = value;
            if (value > max[index]!) max[index] = value;
          }
        }
      }
      mins.push(min);
      maxes.push(max);
    }
  }
}

export function pageBytes(shape: ModelShape): number {
  return shape.numKvHeads * pageTokens * shape.headDim * 4;
}

/** Bytes one token costs across all layers, keys and values. */
export function bytesPerToken(shape: Pick<ModelShape, 'numLayers' | 'numKvHeads' | 'headDim'>): number {
  return shape.numLayers * 2 * shape.numKvHeads * shape.headDim * 4;
}
