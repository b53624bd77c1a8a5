/**
 * Selection of the cached tokens a step attends to. While the context fits the model's trained positions
 * a sequence attends to all of it. Past that, each layer attends to a bounded set: the first
 * tokens (attention sinks, as in StreamingLLM), a recent window, and the older pages whose
 * keys score highest against the latest query (Quest). The old tokens are rotated to sit just
 * before the window, so no query-key distance exceeds the attended budget.
 */
import { pageTokens, type LayerView, type SequenceCache } from './kv-cache.ts';

export interface SparseAttentionOptions {
  /** Tokens from the start of the context that every step attends to. A multiple of 32. */
  sinkTokens: number;
  /** Most recent tokens every step attends to. */
  windowTokens: number;
  /** Older tokens chosen per layer by page score. A multiple of 32. */
  selectedTokens: number;
}

export const defaultSparseAttention: SparseAttentionOptions = { sinkTokens: 64, windowTokens: 448, selectedTokens: 256 };

export function attendedBudget(options: SparseAttentionOptions): number {
  return options.sinkTokens + options.windowTokens + options.selectedTokens;
}

export interface ViewRequest {
  cache: SequenceCache;
  numLayers: number;
  numHeads: number;
  /** Positions the model was trained on; a dense view must keep every distance below it. */
  maxPositions: number;
  /** New tokens that will attend to this view before it is chosen again. */
  lookahead: number;
  options: SparseAttentionOptions;
  /** The latest post-RoPE query per layer, [heads, headDim]; without it, recent pages are chosen. */
  queries?: Float32Array[];
}

export function isDense(length: number, lookahead: number, maxPositions: number): boolean {
  return length + lookahead <= maxPositions;
}

export function chooseViews(request: ViewRequest): LayerView[] {
  const { cache, numLayers, options } = request;
  const length = cache.length;
  if (isDense(length, request.lookahead, request.maxPositions)) {
    return Array.from({ length: numLayers }, () => (length === 0 ? [] : [{ start: 0, end: length, shift: 0 }]));
  }

  const sinkEnd = Math.min(options.sinkTokens, length);
  const windowStart = Math.max(sinkEnd, Math.ceil((length - options.windowTokens) / pageTokens) * pageTokens);
  const firstCandidate = Math.ceil(sinkEnd / pageTokens);
  const endCandidate = Math.floor(windowStart / pageTokens);
  const pageCount = Math.min(Math.floor(options.selectedTokens / pageTokens), Math.max(0, endCandidate - firstCandidate));

  return Array.from({ length: numLayers }, (_, layer) => {
    let pages: number[];
    const query = request.queries?.[layer];
    if (query && pageCount > 0) {
      const scores = cache.pageScores(layer, query, request.numHeads, firstCandidate, endCandidate);
      pages = Array.from(scores.keys())
        .sort((a, b) => scores[b]! - scores[a]! || b - a)
        .slice(0, pageCount)
        .map((index) => index + firstCandidate)
        .sort((a, b) => a - b);
    } else {
      pages = Array.from({ length: pageCount }, (_, i) => endCandidate - pageCount + i);
    }

    // Old tokens take the positions just before the window, in their original order.
    const oldTokens = sinkEnd + pages.length * pageTokens;
    const firstVirtual = windowStart - oldTokens;
    const view: LayerView = [];
    if (sinkEnd > 0) view.push({ start: 0, end: sinkEnd, shift: firstVirtual });
    pages.forEach((page, index) => {
      const start = page * pageTokens;
      const shift = firstVirtual + sinkEnd + index * pageTokens - start;
      const last = view[view.length - 1];
      if (last && last.end === start && last.shift === shift) last.end = start + pageTokens;
      else view.push({ start, end: start + pageTokens, shift });
    });
    if (windowStart < length) view.push({ start: windowStart, end: length, shift: 0 });
    return view;
  });
}
