// Lists the nodes of an ONNX model file without an ONNX library, for checks that
// count what ONNX Runtime writes to optimizedModelFilePath.

import { readFile } from 'node:fs/promises';

/** Minimal protobuf reader: yields [fieldNumber, wireType, value] where value is a Uint8Array for wire type 2. */
function* protoFields(bytes) {
  let offset = 0;
  const varint = () => {
    let result = 0;
    let scale = 1;
    for (;;) {
      const byte = bytes[offset++];
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 128;
    }
  };
  while (offset < bytes.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (wireType === 0) yield [field, wireType, varint()];
    else if (wireType === 1) offset += 8;
    else if (wireType === 5) offset += 4;
    else if (wireType === 2) {
      const length = varint();
      yield [field, wireType, bytes.subarray(offset, offset + length)];
      offset += length;
    } else throw new Error(`unsupported protobuf wire type ${wireType} at byte ${offset}`);
  }
}

/** Returns the nodes ({ opType, domain, inputs }) of an ONNX model file's main graph (ModelProto.graph = 7, GraphProto.node = 1). */
export async function graphNodes(modelPath) {
  const bytes = new Uint8Array(await readFile(modelPath));
  const decoder = new TextDecoder();
  const nodes = [];
  for (const [field, wireType, graph] of protoFields(bytes)) {
    if (field !== 7 || wireType !== 2) continue;
    for (const [graphField, graphWire, nodeBytes] of protoFields(graph)) {
      if (graphField !== 1 || graphWire !== 2) continue;
      const node = { opType: '', domain: '', inputs: [] };
      for (const [nodeField, nodeWire, value] of protoFields(nodeBytes)) {
        if (nodeWire !== 2) continue;
        if (nodeField === 1) node.inputs.push(decoder.decode(value));
        else if (nodeField === 4) node.opType = decoder.decode(value);
        else if (nodeField === 7) node.domain = decoder.decode(value);
      }
      nodes.push(node);
    }
  }
  return nodes;
}
