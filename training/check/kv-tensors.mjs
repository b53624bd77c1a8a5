// Tensor helpers shared by the graph checks in this folder.
import ort from 'onnxruntime-node';

/** Concatenates two [batch, kv_heads, length, head_dim] tensors along the length axis. */
export function concatLength(left, right) {
  const [batch, heads, leftLength, dim] = left.dims;
  const rightLength = right.dims[2];
  const total = leftLength + rightLength;
  const data = new Float32Array(batch * heads * total * dim);
  for (let plane = 0; plane < batch * heads; plane++) {
    data.set(left.data.subarray(plane * leftLength * dim, (plane + 1) * leftLength * dim), plane * total * dim);
    data.set(right.data.subarray(plane * rightLength * dim, (plane + 1) * rightLength * dim), (plane * total + leftLength) * dim);
  }
  return new ort.Tensor('float32', data, [batch, heads, total, dim]);
}
