/** Token selection: greedy, or temperature with nucleus (top-p) sampling from a seeded generator. */
import { z } from 'zod';

export const samplingSchema = z
  .object({
    temperature: z.number().min(0).max(5).default(0),
    topP: z.number().gt(0).max(1).default(1),
    seed: z.number().int().optional(),
  })
  .strict();

export type SamplingOptions = z.input<typeof samplingSchema>;
export type Sampling = z.output<typeof samplingSchema>;

export function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function argmax(logits: Float32Array, offset: number, length: number): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < length; i++) {
    const value = logits[offset + i]!;
    if (value > bestValue) {
      bestValue = value;
      best = i;
    }
  }
  return best;
}

/** Picks the next token from `length` logits starting at `offset`. */
export function sampleToken(logits: Float32Array, offset: number, length: number, sampling: Sampling, random: () => number): number {
  if (sampling.temperature === 0) return argmax(logits, offset, length);

  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, logits[offset + i]!);
  const probabilities = new Float64Array(length);
  let total = 0;
  for (let i = 0; i < length; i++) {
    const p = Math.exp((logits[offset + i]! - max) / sampling.temperature);
    probabilities[i] = p;
    total += p;
  }

  const order = Array.from({ length }, (_, i) => i).sort((a, b) => probabilities[b]! - probabilities[a]!);
  let nucleusSize = 0;
  let cumulative = 0;
  while (nucleusSize < order.length && cumulative < sampling.topP * total) {
    cumulative += probabilities[order[nucleusSize]!]!;
    nucleusSize++;
  }

  let threshold = random() * cumulative;
  for (let i = 0; i < nucleusSize; i++) {
    threshold -= probabilities[order[i]!]!;
    if (threshold <= 0) return order[i]!;
  }
  return order[nucleusSize - 1]!;
}
