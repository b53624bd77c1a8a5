/**
 * Rotary position arithmetic on cached keys. Keys are cached post-RoPE. A RoPE rotation by
 * position a followed by one by b equals one by a + b, so rotating a key cached at position p
 * by `shift` moves it to position p + shift. Sparse attention uses this to keep the distance
 * between a query and the old pages it attends to within the trained range.
 */
export interface ModelShape {
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  ropeTheta: number;
}

const tables = new Map<string, { cos: Float32Array; sin: Float32Array }>();

function rotationTable(headDim: number, shift: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const key = `${headDim}:${shift}:${theta}`;
  let table = tables.get(key);
  if (!table) {
    const half = headDim / 2;
    const cos = new Float32Array(half);
    const sin = new Float32Array(half);
    for (let i = 0; i < half; i++) {
      const angle = shift * theta ** ((-2 * i) / headDim);
      cos[i] = Math.cos(angle);
      sin[i] = Math.sin(angle);
    }
    if (tables.size > 4096) tables.clear();
    tables.set(key, (table = { cos, sin }));
  }
  return table;
}

/**
 * Rotates `count` consecutive keys of `headDim` floats starting at `offset` by `shift` positions,
 * in the rotate-half convention of Llama: dimension i pairs with i + headDim / 2.
 */
export function applyRotation(keys: Float32Array, offset: number, count: number, headDim: number, shift: number, theta: number): void {
  const half = headDim / 2;
  const { cos, sin } = rotationTable(headDim, shift, theta);
  for (let t = 0; t < count; t++) {
    const base = offset + t * headDim;
    for (let i = 0; i < half; i++) {
      const x = keys[base + i]!;
      const y = keys[base + i + half]!;
      keys[base + i] = x * cos[i]! - y * sin[i]!;
      keys[base + i + half] = y * cos[i]! + x * sin[i]!;
    }
  }
}
