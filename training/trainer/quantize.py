"""Quantize the weights of a Sanfang ONNX graph to 4 or 8 bits for CPU decoding.

Every MatMul whose B input is a constant 2-D weight [K, N] becomes a
com.microsoft MatMulNBits node. The weight is followed through Constant nodes
and through Concat nodes over constants, so stacked expert weights and the
fused QKV weight qualify too. Each column of the weight is cut into blocks of
block_size values along K. A block stores one float scale and, with
--zero-points, one zero point, and its values as bits-wide codes packed low
bits first: dequantized = (code - zero_point) * scale, where the zero point is
2^(bits-1) when the graph stores none.

Weights with fewer than --min-elements values stay float32. In the step graph
these are the routers (256 x 4) and the RoPE rotation (64 x 64, entries -1, 0
and 1), too small for their MatMuls to matter for speed.

The output projection (LM head) shares its weight with the token embedding in
Sanfang's models (lm_head_weight is embed_weight transposed). The output stores
that table once:

- --lm-head fp32 (the default): the LM head MatMul reads Transpose(embed),
  which ONNX Runtime folds into a constant when it loads the graph (checked
  with onnxruntime-node 1.30 at graphOptimizationLevel 'all').
- --lm-head quantized: the LM head becomes a MatMulNBits node. Its packed
  weight [vocab, blocks, blob] is the embedding table row by row, so the
  embedding Gather reads the same packed rows, scales and zero points and
  dequantizes them with standard ops.

An untied LM head is quantized like any other weight with --lm-head quantized
and left alone otherwise.

The output does not depend on model.onnx. It embeds its weights, or with
--weights-from reads them by offset from another file of its folder and
records that file's name and sha256 (sanfang.data_file, sanfang.data_sha256),
which the engine checks at load. A file that already contains the same bytes is
reused, so a graph whose structure changes but whose weights do not adds no
second copy of them to the repository. The output keeps the input's metadata,
including sanfang.weights_sha256 (the engine loads a step graph only when that
matches model.onnx), and adds sanfang.quantization.

The 4-bit graph (not committed) and the 8-bit graph in
models/sanfang-moe-v0/onnx were written with:

    /usr/bin/python3 training/trainer/quantize.py \\
        models/sanfang-moe-v0/onnx/model.step.onnx \\
        models/sanfang-moe-v0/onnx/model.step.q4.onnx --bits 4 --block-size 64
    /usr/bin/python3 training/trainer/quantize.py \\
        models/sanfang-moe-v0/onnx/model.step.onnx \\
        models/sanfang-moe-v0/onnx/model.step.q8.onnx --bits 8 --block-size 128 \\
        --lm-head quantized --weights-from models/sanfang-moe-v0/onnx/model.step.q8.data

model.step.q8.data is the earlier 8-bit graph file, whose quantized weights are
the same bytes. After a retrain, delete it first, and the command writes a new one.

The 8-bit graph quantizes the tied LM head because a float32 embedding table
(3 MB) would take it past 10 MB. training/check/quant-bench.mjs compares their
speed and greedy output with the float32 graph.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
QUANTIZATION_KEY = "sanfang.quantization"
# Shrink factors tried for each block's range with --clip-search. 1.0 keeps the full range.
CLIP_FACTORS = np.linspace(1.0, 0.75, 11, dtype=np.float32)


@dataclass
class QuantizedWeight:
    """A [K, N] weight in MatMulNBits layout."""

    packed: np.ndarray  # uint8 [N, blocks, block_size * bits / 8]
    scales: np.ndarray  # float32 [N, blocks]
    zero_points: Optional[np.ndarray]  # uint8, packed like `packed` along blocks. None means 2^(bits-1).
    k: int
    n: int
    bits: int
    block_size: int

    def dequantize(self) -> np.ndarray:
        """Unpack the stored bytes into the [K, N] float32 weight that MatMulNBits computes with."""
        codes = unpack_nibbles(self.packed) if self.bits == 4 else self.packed
        zero = self.unpacked_zero_points()
        values = (codes.astype(np.float32) - zero[:, :, None]) * self.scales[:, :, None]
        return values.reshape(self.n, -1)[:, : self.k].T

    def unpacked_zero_points(self) -> np.ndarray:
        blocks = self.scales.shape[1]
        if self.zero_points is None:
            return np.full((self.n, blocks), 2 ** (self.bits - 1), dtype=np.float32)
        if self.bits == 8:
            return self.zero_points.astype(np.float32)
        return unpack_nibbles(self.zero_points)[:, :blocks].astype(np.float32)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes along the last axis, two to a byte, the first in the low bits."""
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), dtype=np.uint8)], axis=-1)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    low = packed & 0x0F
    high = packed >> 4
    return np.stack([low, high], axis=-1).reshape(packed.shape[:-1] + (packed.shape[-1] * 2,))


def quantize_weight(weight: np.ndarray, bits: int, block_size: int, zero_points: bool, clip_search: bool) -> QuantizedWeight:
    """Quantize a [K, N] float weight block-wise along K, rounding to nearest.

    Symmetric blocks take the value of largest magnitude, sign included, as
    code 0 (scale = value / -2^(bits-1)), so that value is exact and the
    opposite end loses one code. Blocks with zero points map [min, max] (both
    widened to include 0) onto [0, 2^bits - 1]. With clip_search each block
    also tries the ranges shrunk by CLIP_FACTORS and keeps the one with the
    least squared error.
    """
    k, n = weight.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), dtype=np.float32)
    padded[:, :k] = weight.T
    values = padded.reshape(n, blocks, block_size)
    max_code = 2**bits - 1

    if zero_points:
        low = np.minimum(values.min(axis=2), 0.0)
        high = np.maximum(values.max(axis=2), 0.0)
    else:
        index = np.abs(values).argmax(axis=2)
        extreme = np.take_along_axis(values, index[:, :, None], axis=2)[:, :, 0]

    best_error = np.full((n, blocks), np.inf, dtype=np.float32)
    best_codes = np.zeros(values.shape, dtype=np.uint8)
    best_scales = np.zeros((n, blocks), dtype=np.float32)
    best_zero = np.zeros((n, blocks), dtype=np.float32)
    for factor in CLIP_FACTORS if clip_search else CLIP_FACTORS[:1]:
        if zero_points:
            scales = (high - low) * factor / max_code
            safe = np.where(scales == 0, 1.0, scales).astype(np.float32)
            zero = np.clip(np.round(-low * factor / safe), 0, max_code)
        else:
            scales = extreme * factor / -(2 ** (bits - 1))
            safe = np.where(scales == 0, 1.0, scales).astype(np.float32)
            zero = np.full((n, blocks), 2 ** (bits - 1), dtype=np.float32)
        codes = np.clip(np.round(values / safe[:, :, None]) + zero[:, :, None], 0, max_code)
        error = np.square((codes - zero[:, :, None]) * safe[:, :, None] - values).sum(axis=2)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_codes = np.where(better[:, :, None], codes.astype(np.uint8), best_codes)
        best_scales = np.where(better, safe, best_scales)
        best_zero = np.where(better, zero, best_zero)

    packed = pack_nibbles(best_codes) if bits == 4 else best_codes
    stored_zero = None
    if zero_points:
        zero_codes = best_zero.astype(np.uint8)
        stored_zero = pack_nibbles(zero_codes) if bits == 4 else zero_codes
    return QuantizedWeight(packed, best_scales.astype(np.float32), stored_zero, k, n, bits, block_size)


class GraphIndex:
    """Producers, consumers and constant values of one graph's tensors."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers: Dict[str, onnx.TensorProto] = {tensor.name: tensor for tensor in graph.initializer}
        self.producers: Dict[str, onnx.NodeProto] = {}
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.output:
                self.producers[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def constant(self, name: str) -> Optional[np.ndarray]:
        """Return the value of a tensor computed from constants only, or None.

        Follows initializers, Constant nodes (attribute `value`) and Concat nodes whose
        inputs are all such constants. Anything else counts as computed at run time.
        """
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            attribute = next((a for a in node.attribute if a.name == "value"), None)
            return None if attribute is None else numpy_helper.to_array(attribute.t)
        if node.op_type == "Concat":
            parts = [self.constant(part) for part in node.input]
            if any(part is None for part in parts):
                return None
            axis = next(a.i for a in node.attribute if a.name == "axis")
            return np.concatenate(parts, axis=axis)
        return None


def find_tied_embedding(index: GraphIndex) -> Optional[Tuple[onnx.NodeProto, onnx.NodeProto, str]]:
    """Find the embedding Gather and the LM head MatMul that share one table.

    Returns (gather, matmul, table initializer name) when a Gather reads a 2-D float
    initializer [vocab, hidden] and a MatMul's constant B equals its transpose.
    """
    for gather in index.graph.node:
        if gather.op_type != "Gather" or gather.input[0] not in index.initializers:
            continue
        table = index.constant(gather.input[0])
        if table is None or table.ndim != 2 or table.dtype != np.float32:
            continue
        for matmul in index.graph.node:
            if matmul.op_type != "MatMul":
                continue
            weight = index.constant(matmul.input[1])
            if weight is not None and weight.shape == table.T.shape and np.array_equal(weight, table.T):
                return gather, matmul, gather.input[0]
    return None


def is_lm_head(index: GraphIndex, matmul: onnx.NodeProto) -> bool:
    """Return True when the MatMul writes the graph output named logits."""
    return "logits" in matmul.output and any(output.name == "logits" for output in index.graph.output)


def matmul_nbits_node(name: str, inputs: Sequence[str], output: str, weight: QuantizedWeight, accuracy_level: int) -> onnx.NodeProto:
    return helper.make_node(
        "MatMulNBits",
        list(inputs),
        [output],
        name=name,
        domain=MS_DOMAIN,
        K=weight.k,
        N=weight.n,
        bits=weight.bits,
        block_size=weight.block_size,
        accuracy_level=accuracy_level,
    )


def add_weight_initializers(graph: onnx.GraphProto, prefix: str, weight: QuantizedWeight) -> List[str]:
    """Add a quantized weight's initializers and return the MatMulNBits inputs after A."""
    names = [f"{prefix}.q{weight.bits}", f"{prefix}.scales"]
    graph.initializer.append(numpy_helper.from_array(weight.packed, names[0]))
    graph.initializer.append(numpy_helper.from_array(weight.scales, names[1]))
    if weight.zero_points is not None:
        names.append(f"{prefix}.zero_points")
        graph.initializer.append(numpy_helper.from_array(weight.zero_points, names[2]))
    return names


def dequantizing_gather_nodes(gather: onnx.NodeProto, weight_inputs: List[str], weight: QuantizedWeight) -> Tuple[List[onnx.NodeProto], List[onnx.TensorProto]]:
    """Build standard ops that replace an embedding Gather with one over packed rows.

    The rows of a MatMulNBits weight [vocab, blocks, blob] are the embedding vectors,
    so gathering packed rows, scales and zero points by token id and dequantizing
    them gives the embedding without a float copy of the table. Opset 17 has no
    BitwiseAnd, so a 4-bit low nibble is byte - ((byte >> 4) << 4).
    """
    ids = gather.input[1]
    prefix = gather.name.strip("/").replace("/", ".") or "embedding"
    prefix = f"{prefix}.dequantize"
    blocks, block_size = weight.scales.shape[1], weight.block_size
    nodes: List[onnx.NodeProto] = []
    constants: List[onnx.TensorProto] = []

    def name(suffix: str) -> str:
        return f"{prefix}.{suffix}"

    def constant(suffix: str, value: np.ndarray) -> str:
        constants.append(numpy_helper.from_array(value, name(suffix)))
        return name(suffix)

    nodes.append(helper.make_node("Gather", [weight_inputs[0], ids], [name("packed")], name=name("gather_packed"), axis=0))
    codes = name("packed")
    if weight.bits == 4:
        four = constant("four", np.array(4, dtype=np.uint8))
        nodes.append(helper.make_node("BitShift", [codes, four], [name("high")], name=name("shift_high"), direction="RIGHT"))
        nodes.append(helper.make_node("BitShift", [name("high"), four], [name("high_shifted")], name=name("shift_back"), direction="LEFT"))
        nodes.append(helper.make_node("Sub", [codes, name("high_shifted")], [name("low")], name=name("low_nibble")))
        last_axis = constant("last_axis", np.array([-1], dtype=np.int64))
        nodes.append(helper.make_node("Unsqueeze", [name("low"), last_axis], [name("low_3d")], name=name("unsqueeze_low")))
        nodes.append(helper.make_node("Unsqueeze", [name("high"), last_axis], [name("high_3d")], name=name("unsqueeze_high")))
        nodes.append(helper.make_node("Concat", [name("low_3d"), name("high_3d")], [name("interleaved")], name=name("interleave"), axis=-1))
        codes = name("interleaved")

    # [..., blocks, block_size] whatever the rank of the ids.
    block_shape = constant("block_shape", np.array([blocks, block_size], dtype=np.int64))
    nodes.append(helper.make_node("Shape", [ids], [name("ids_shape")], name=name("ids_shape")))
    nodes.append(helper.make_node("Concat", [name("ids_shape"), block_shape], [name("blocks_shape")], name=name("blocks_shape"), axis=0))
    nodes.append(helper.make_node("Reshape", [codes, name("blocks_shape")], [name("codes")], name=name("reshape_codes")))
    nodes.append(helper.make_node("Cast", [name("codes")], [name("codes_float")], name=name("cast_codes"), to=TensorProto.FLOAT))

    if weight.zero_points is None:
        zero = constant("zero_point", np.array(2 ** (weight.bits - 1), dtype=np.float32))
    else:
        # Zero points are gathered unpacked: a separate float table [vocab, blocks].
        zero_table = constant("zero_point_table", weight.unpacked_zero_points())
        nodes.append(helper.make_node("Gather", [zero_table, ids], [name("zero_rows")], name=name("gather_zero_points"), axis=0))
        nodes.append(helper.make_node("Unsqueeze", [name("zero_rows"), constant("zero_axis", np.array([-1], dtype=np.int64))], [name("zero_point")], name=name("unsqueeze_zero_points")))
        zero = name("zero_point")
    nodes.append(helper.make_node("Sub", [name("codes_float"), zero], [name("centered")], name=name("center")))

    nodes.append(helper.make_node("Gather", [weight_inputs[1], ids], [name("scale_rows")], name=name("gather_scales"), axis=0))
    nodes.append(helper.make_node("Unsqueeze", [name("scale_rows"), constant("scale_axis", np.array([-1], dtype=np.int64))], [name("scales")], name=name("unsqueeze_scales")))
    nodes.append(helper.make_node("Mul", [name("centered"), name("scales")], [name("blocks")], name=name("scale")))

    hidden = constant("hidden", np.array([blocks * block_size], dtype=np.int64))
    nodes.append(helper.make_node("Concat", [name("ids_shape"), hidden], [name("vector_shape")], name=name("vector_shape"), axis=0))
    vectors = name("vectors") if weight.k != blocks * block_size else gather.output[0]
    nodes.append(helper.make_node("Reshape", [name("blocks"), name("vector_shape")], [vectors], name=name("reshape_vectors")))
    if vectors != gather.output[0]:
        # Drop the zero padding of the last block.
        starts = constant("pad_start", np.array([0], dtype=np.int64))
        ends = constant("pad_end", np.array([weight.k], dtype=np.int64))
        axes = constant("pad_axis", np.array([-1], dtype=np.int64))
        nodes.append(helper.make_node("Slice", [vectors, starts, ends, axes], [gather.output[0]], name=name("unpad")))
    return nodes, constants


def remove_dead_nodes(graph: onnx.GraphProto) -> None:
    """Remove nodes and initializers that no graph output depends on."""
    needed: Set[str] = {output.name for output in graph.output}
    live_nodes: List[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            live_nodes.append(node)
            needed.update(name for name in node.input if name)
    live_nodes.reverse()
    del graph.node[:]
    graph.node.extend(live_nodes)
    initializers = [tensor for tensor in graph.initializer if tensor.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def relative_error(original: np.ndarray, quantized: QuantizedWeight) -> float:
    return float(np.linalg.norm(quantized.dequantize() - original) / max(np.linalg.norm(original), 1e-12))


@dataclass
class QuantizeOptions:
    bits: int
    block_size: int
    zero_points: bool
    clip_search: bool
    accuracy_level: int
    lm_head: str
    min_elements: int

    def describe(self) -> str:
        """Summarize the options for the sanfang.quantization metadata value."""
        parts = [
            f"q{self.bits} block {self.block_size}",
            "zero points" if self.zero_points else "symmetric",
            "clip search" if self.clip_search else "round to nearest",
            f"MatMulNBits accuracy_level {self.accuracy_level}",
            f"lm head {self.lm_head}",
            f"float32 below {self.min_elements} values",
        ]
        return ", ".join(parts)


def quantize_tied_embedding(index: GraphIndex, options: QuantizeOptions, new_nodes: Dict[int, List[onnx.NodeProto]], report: List[Tuple[str, str]]) -> Optional[onnx.NodeProto]:
    """Rewrite a tied embedding and LM head as --lm-head selects, and return the LM head MatMul, if any."""
    tied = find_tied_embedding(index)
    if tied is None:
        return None
    gather, matmul, table_name = tied
    table = index.constant(table_name)
    assert table is not None
    graph = index.graph
    positions = {id(node): position for position, node in enumerate(graph.node)}

    if options.lm_head == "quantized":
        weight = quantize_weight(table.T, options.bits, options.block_size, options.zero_points, options.clip_search)
        inputs = add_weight_initializers(graph, table_name, weight)
        new_nodes[positions[id(matmul)]] = [matmul_nbits_node(matmul.name, [matmul.input[0], *inputs], matmul.output[0], weight, options.accuracy_level)]
        gather_nodes, constants = dequantizing_gather_nodes(gather, inputs, weight)
        new_nodes[positions[id(gather)]] = gather_nodes
        graph.initializer.extend(constants)
        report.append((f"{table_name} (embedding and LM head)", f"q{options.bits}, relative error {relative_error(table.T, weight):.4f}"))
    else:
        transposed = f"{table_name}.transposed"
        transpose = helper.make_node("Transpose", [table_name], [transposed], name=f"{matmul.name}/TransposeTiedWeight", perm=[1, 0])
        rewired = helper.make_node("MatMul", [matmul.input[0], transposed], list(matmul.output), name=matmul.name)
        new_nodes[positions[id(matmul)]] = [transpose, rewired]
        report.append((f"{table_name} (embedding and LM head)", "float32, stored once, the LM head reads its transpose"))
    return matmul


def quantize_model(model: onnx.ModelProto, options: QuantizeOptions) -> List[Tuple[str, str]]:
    """Rewrite the model in place and return (weight, outcome) rows for the report."""
    graph = model.graph
    index = GraphIndex(graph)
    report: List[Tuple[str, str]] = []
    new_nodes: Dict[int, List[onnx.NodeProto]] = {}  # position in graph.node -> replacement nodes
    tied_matmul = quantize_tied_embedding(index, options, new_nodes, report)
    # A weight read by several MatMuls is quantized once: weight name -> MatMulNBits inputs after A.
    quantized_inputs: Dict[str, Tuple[List[str], QuantizedWeight]] = {}
    reported: Set[str] = set()

    for position, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node is tied_matmul:
            continue
        weight = index.constant(node.input[1])
        if weight is None:
            continue
        label = node.input[1]
        if label in reported and label not in quantized_inputs:
            continue
        reported.add(label)
        if weight.ndim != 2 or weight.dtype != np.float32:
            report.append((label, f"not quantized: constant of shape {list(weight.shape)} and type {weight.dtype} is not a 2-D float32 weight"))
            continue
        if weight.size < options.min_elements:
            report.append((label, f"float32: {weight.size} values, under --min-elements"))
            continue
        if is_lm_head(index, node) and options.lm_head != "quantized":
            report.append((label, "float32: untied LM head, --lm-head fp32"))
            continue
        if label not in quantized_inputs:
            quantized = quantize_weight(weight, options.bits, options.block_size, options.zero_points, options.clip_search)
            quantized_inputs[label] = (add_weight_initializers(graph, label, quantized), quantized)
            report.append((label, f"q{options.bits} [{weight.shape[0]}x{weight.shape[1]}], relative error {relative_error(weight, quantized):.4f}"))
        inputs, quantized = quantized_inputs[label]
        new_nodes[position] = [matmul_nbits_node(node.name, [node.input[0], *inputs], node.output[0], quantized, options.accuracy_level)]

    nodes: List[onnx.NodeProto] = []
    for position, node in enumerate(graph.node):
        nodes.extend(new_nodes.get(position, [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    remove_dead_nodes(graph)

    if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return report


def embed_external_data(model: onnx.ModelProto) -> None:
    """Mark every loaded initializer as stored in the file itself."""
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            tensor.data_location = TensorProto.DEFAULT
            del tensor.external_data[:]


DATA_FILE_KEY = "sanfang.data_file"
DATA_SHA256_KEY = "sanfang.data_sha256"
# Scalars and shape vectors stay in the graph even when their bytes occur in the data file.
MIN_SHARED_BYTES = 1024


def raw_bytes(tensor: TensorProto) -> bytes:
    """Return a tensor's data as raw little-endian bytes, however the proto stores it."""
    return tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()


def share_weights(model: onnx.ModelProto, data_path: Path) -> Tuple[int, int]:
    """Point every initializer whose bytes occur in data_path at that offset instead of embedding it.

    data_path must sit in the output graph's folder. Any occurrence works, because
    the bytes there are identical. Returns (shared, embedded) initializer counts.
    """
    data = data_path.read_bytes()
    shared = embedded = 0
    for tensor in model.graph.initializer:
        raw = raw_bytes(tensor)
        offset = data.find(raw) if len(raw) >= MIN_SHARED_BYTES else -1
        if offset < 0:
            embedded += 1
            continue
        # Rebuilding from the array moves typed fields (float_data …) to raw_data, cleared next.
        if not tensor.HasField("raw_data"):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(len(raw)))):
            tensor.external_data.add(key=key, value=value)
        shared += 1
    return shared, embedded


def write_weights(model: onnx.ModelProto, data_path: Path) -> None:
    """Write the raw bytes of every initializer of MIN_SHARED_BYTES or more, one after another, to data_path."""
    with data_path.open("wb") as out:
        for tensor in model.graph.initializer:
            raw = raw_bytes(tensor)
            if len(raw) >= MIN_SHARED_BYTES:
                out.write(raw)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="ONNX graph to quantize, whose external data is read relative to its folder")
    parser.add_argument("output", type=Path, help="quantized ONNX graph to write, with its weights embedded unless --weights-from is given")
    parser.add_argument("--bits", type=int, choices=[4, 8], default=4, help="bits per weight (default 4)")
    parser.add_argument("--block-size", type=int, choices=[16, 32, 64, 128, 256], default=32, help="weights per scale along K (default 32)")
    parser.add_argument("--zero-points", action="store_true", help="store a zero point per block instead of the symmetric 2^(bits-1)")
    parser.add_argument("--clip-search", action="store_true", help="pick each block's range from shrink factors 1.0 to 0.75 by squared error")
    # Measured with onnxruntime-node 1.30 on an AVX-512 VNNI CPU: at level 0, 8-bit weights made a
    # batch-1 decode call about 7x slower than float32, and 4-bit ones gave no speed-up at batch 16.
    parser.add_argument(
        "--accuracy-level",
        type=int,
        choices=[0, 1, 2, 3, 4],
        default=4,
        help="MatMulNBits accuracy_level: 4 lets ONNX Runtime quantize A to int8 per block when the CPU has a kernel for it, 0 keeps A float (default 4)",
    )
    parser.add_argument("--lm-head", choices=["fp32", "quantized"], default="fp32", help="keep the LM head (and a tied embedding) float32 or quantize it (default fp32)")
    parser.add_argument("--min-elements", type=int, default=16384, help="weights with fewer values stay float32 (default 16384)")
    parser.add_argument(
        "--weights-from",
        type=Path,
        help="a file in the output's folder that the output reads its weights from by offset instead of embedding "
        "them; an existing file (such as an earlier quantized graph of the same weights) is reused where its bytes "
        "match, and a missing one is written with the weights",
    )
    args = parser.parse_args(argv)

    if not args.input.is_file():
        parser.error(f"input graph not found: {args.input}")
    model = onnx.load(str(args.input), load_external_data=True)
    embed_external_data(model)

    options = QuantizeOptions(args.bits, args.block_size, args.zero_points, args.clip_search, args.accuracy_level, args.lm_head, args.min_elements)
    report = quantize_model(model, options)

    metadata = {entry.key: entry.value for entry in model.metadata_props}
    metadata[QUANTIZATION_KEY] = options.describe()
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.weights_from is not None:
        if args.weights_from.resolve().parent != args.output.resolve().parent:
            parser.error(f"--weights-from {args.weights_from} must be in the output's folder {args.output.parent}")
        if not args.weights_from.exists():
            write_weights(model, args.weights_from)
        shared, embedded = share_weights(model, args.weights_from)
        model.doc_string = f"Sanfang step graph with {options.describe()}; weights are read from {args.weights_from.name} by offset."
        metadata[DATA_FILE_KEY] = args.weights_from.name
        metadata[DATA_SHA256_KEY] = hashlib.sha256(args.weights_from.read_bytes()).hexdigest()
        onnx.helper.set_model_props(model, metadata)
        print(f"{shared} initializers read from {args.weights_from.name}, {embedded} embedded")
    # Serialise directly: onnx.save would write external tensors' data back into their file.
    args.output.write_bytes(model.SerializeToString())
    if args.weights_from is not None:
        onnx.checker.check_model(str(args.output))
    for weight, outcome in report:
        print(f"{weight}: {outcome}")
    size_mb = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size_mb:.2f} MB): {metadata[QUANTIZATION_KEY]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
