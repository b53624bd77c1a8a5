"""Export the step graph: the decoder graph that Sanfang's own engine runs.

The step graph computes the same model as onnx/model.onnx, with an interface
built for a paged KV cache and packed batches:

- inputs: input_ids and position_ids int64 [batch, seq]; attention_bias
  float32 [batch, seq, past + seq]; past_key.{i} and past_value.{i} float32
  [batch, kv_heads, past, head_dim] (keys after RoPE, past may be 0).
- outputs: logits float32 [batch, vocab] for the last position of each row;
  new_key.{i} and new_value.{i} float32 [batch, kv_heads, seq, head_dim] (only
  the new tokens, keys after RoPE); last_query.{i} float32 [batch, heads,
  head_dim], the query of the last position after RoPE and before the
  1/sqrt(head_dim) scale; expert_counts float32 [layers, experts + zero experts],
  the (token, choice) assignments per route over all batch x seq positions;
  and, only when an expert capacity is set, expert_dropped float32 [layers].

attention_bias is added to the scores of every head. Columns 0..past-1 refer to
the past keys and columns past..past+seq-1 to the new tokens. The graph adds no
causal mask of its own. Values below MASK_FLOOR are raised to it, so -inf works
as a mask and a row with every column masked averages its values instead of
producing NaN.

Attention never concatenates the past and new keys: it computes scores against
each, concatenates the two small score tensors, adds the bias, applies softmax,
and sums probs_past @ V_past and probs_new @ V_new.

The initializers are ONNX external data whose location is model.onnx, with the
offset and length of the same bytes inside that file, so the step graph adds
no second copy of the weights. Stacked expert weights are Concat nodes over
such slices, which ONNX Runtime folds into constants when it loads the graph.
The metadata key sanfang.weights_sha256 records model.onnx's SHA-256.

    /usr/bin/python3 training/trainer/step_graph.py \\
        --checkpoint training/out/ckpt/model.pt --model-dir models/sanfang-moe-v0
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from export import load_model
from model import MoeConfig, MoeForCausalLM
from step_modules import MASK_FLOOR, MOE_DISPATCHES, DenseStepMoe, StepDecoder, StepGraphOptions, io_names

STEP_GRAPH_FILE = "model.step.onnx"
WEIGHTS_FILE = "model.onnx"
WEIGHTS_SHA256_KEY = "sanfang.weights_sha256"
# Constants that the step graph builds itself (RoPE tables, the rotation
# matrix) stay inside the file. A larger initializer that is not in model.onnx
# is an error, because it would be a second copy of a weight.
MAX_EMBEDDED_BYTES = 64 * 1024
# Smaller initializers (scalars, shape vectors) stay embedded even when their
# bytes happen to occur in model.onnx.
MIN_LINKED_BYTES = 64


def export_step_graph(
    model: MoeForCausalLM,
    model_dir: Path,
    options: StepGraphOptions = StepGraphOptions(),
    opset: int = 17,
    file_name: str = STEP_GRAPH_FILE,
) -> Path:
    """Write <model_dir>/onnx/<file_name> over the weights in <model_dir>/onnx/model.onnx and return its path.

    Raises RuntimeError when a weight of the model is not found in model.onnx,
    for example when model.onnx was exported from another checkpoint.
    """
    onnx_dir = model_dir / "onnx"
    weights_path = onnx_dir / WEIGHTS_FILE
    step_path = onnx_dir / file_name
    weights_bytes = weights_path.read_bytes()
    weights_sha256 = hashlib.sha256(weights_bytes).hexdigest()

    decoder = StepDecoder(model, options).eval()
    with tempfile.TemporaryDirectory() as directory:
        traced_path = Path(directory) / "traced.onnx"
        trace_to_onnx(decoder, traced_path, opset)
        graph_model = onnx.load(str(traced_path))

    link_weights(graph_model, weights_bytes, stacked_weights(model, decoder))
    graph_model.doc_string = (
        "Sanfang step graph: new-token KV outputs, last-position logits, additive attention bias. "
        f"Weights are read from {WEIGHTS_FILE} by offset."
    )
    metadata = {
        WEIGHTS_SHA256_KEY: weights_sha256,
        "sanfang.moe_dispatch": options.moe_dispatch,
        "sanfang.expert_capacity": str(options.expert_capacity),
        "sanfang.attention_bias_floor": str(MASK_FLOOR),
        "sanfang.last_query_scale": "unscaled (multiply by 1/sqrt(head_dim) for attention scores)",
    }
    del graph_model.metadata_props[:]
    for key, value in metadata.items():
        graph_model.metadata_props.add(key=key, value=value)

    # Serialise directly: onnx.save would write the raw_data of any external
    # tensor back into its location, which is model.onnx.
    step_path.write_bytes(graph_model.SerializeToString())
    if hashlib.sha256(weights_path.read_bytes()).hexdigest() != weights_sha256:
        raise RuntimeError(f"{weights_path} changed while the step graph was written")
    onnx.checker.check_model(str(step_path))
    verify_step_graph(step_path, model.config, options)
    return step_path


def trace_to_onnx(decoder: StepDecoder, path: Path, opset: int) -> None:
    config = decoder.config
    with_dropped = decoder.options.expert_capacity > 0
    input_names, output_names = io_names(config, with_dropped)
    dynamic_axes: Dict[str, Dict[int, str]] = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_bias": {0: "batch_size", 1: "sequence_length", 2: "past_sequence_length + sequence_length"},
        "logits": {0: "batch_size"},
    }
    for layer in range(config.num_hidden_layers):
        for name in (f"past_key.{layer}", f"past_value.{layer}"):
            dynamic_axes[name] = {0: "batch_size", 2: "past_sequence_length"}
        for name in (f"new_key.{layer}", f"new_value.{layer}"):
            dynamic_axes[name] = {0: "batch_size", 2: "sequence_length"}
        dynamic_axes[f"last_query.{layer}"] = {0: "batch_size"}

    # Trace with a nonzero past and seq > 1 so that no length becomes a constant.
    batch, seq, past_length = 2, 3, 4
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    position_ids = torch.arange(past_length, past_length + seq).unsqueeze(0).expand(batch, -1).contiguous()
    attention_bias = torch.zeros(batch, seq, past_length + seq)
    past_shape = (batch, config.num_key_value_heads, past_length, config.head_dim)
    past_flat = [torch.randn(past_shape, generator=generator) for _ in range(2 * config.num_hidden_layers)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 1.13 warns about its own shape inference and about g.op in
        # SplitBySizes.symbolic; neither changes the exported graph.
        warnings.filterwarnings("ignore", message="The shape inference of prim::Constant type is missing")
        warnings.filterwarnings("ignore", message=".*_graph_op' is deprecated")
        torch.onnx.export(
            decoder,
            (input_ids, position_ids, attention_bias, *past_flat),
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )


@dataclass
class StackedWeight:
    """A buffer of the step graph that is a Concat of weights stored separately in model.onnx."""

    value: np.ndarray
    axis: int
    parts: List[np.ndarray]


def stacked_weights(model: MoeForCausalLM, decoder: StepDecoder) -> List[StackedWeight]:
    stacked: List[StackedWeight] = []
    for layer, step_layer in zip(model.layers, decoder.layers):
        attention = layer.attention
        stacked.append(
            StackedWeight(
                step_layer.attention.qkv_weight.numpy(),
                1,
                [module.weight.detach().t().contiguous().numpy() for module in (attention.q_proj, attention.k_proj, attention.v_proj)],
            )
        )
        if isinstance(step_layer.moe, DenseStepMoe):
            experts = layer.moe.experts
            stacked.append(
                StackedWeight(
                    step_layer.moe.gate_up_weight.numpy(),
                    1,
                    [e.gate_up_proj.weight.detach().t().contiguous().numpy() for e in experts],
                )
            )
            stacked.append(
                StackedWeight(
                    step_layer.moe.down_weight.numpy(),
                    0,
                    [e.down_proj.weight.detach().t().contiguous().numpy() for e in experts],
                )
            )
    return stacked


def external_tensor(name: str, array: np.ndarray, offset: int) -> TensorProto:
    """Return a float tensor whose data is `array.nbytes` bytes of model.onnx from `offset`."""
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[array.dtype]
    tensor.dims.extend(array.shape)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(array.nbytes))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def link_weights(graph_model: onnx.ModelProto, weights_bytes: bytes, stacked: Sequence[StackedWeight]) -> None:
    """Replace the initializers of the traced graph with references into model.onnx.

    An initializer whose bytes occur in model.onnx becomes external data at that
    offset. Any occurrence works, because the bytes there are identical. A
    stacked weight becomes a Concat node over its parts' slices. The step
    graph's own small constants stay embedded.
    """

    def find_offset(array: np.ndarray) -> int:
        return weights_bytes.find(np.ascontiguousarray(array).tobytes())

    graph = graph_model.graph
    stacked_by_bytes = {item.value.tobytes(): item for item in stacked}
    initializers: List[TensorProto] = []
    concat_nodes: List[onnx.NodeProto] = []
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        offset = find_offset(array) if array.nbytes >= MIN_LINKED_BYTES else -1
        if offset >= 0:
            initializers.append(external_tensor(tensor.name, array, offset))
            continue
        item = stacked_by_bytes.get(array.tobytes())
        if item is not None:
            part_names = []
            for index, part in enumerate(item.parts):
                part_offset = find_offset(part)
                if part_offset < 0:
                    raise RuntimeError(
                        f"part {index} of {tensor.name} {list(part.shape)} is not in {WEIGHTS_FILE}; "
                        "export model.onnx from the same checkpoint first"
                    )
                part_names.append(f"{tensor.name}.part{index}")
                initializers.append(external_tensor(part_names[-1], part, part_offset))
            concat_nodes.append(
                helper.make_node("Concat", part_names, [tensor.name], name=f"{tensor.name}.concat", axis=item.axis)
            )
            continue
        if array.nbytes > MAX_EMBEDDED_BYTES:
            raise RuntimeError(
                f"initializer {tensor.name} {list(array.shape)} ({array.nbytes} bytes) is not in {WEIGHTS_FILE}; "
                "export model.onnx from the same checkpoint first"
            )
        initializers.append(tensor)

    del graph.initializer[:]
    graph.initializer.extend(initializers)
    # Nodes must stay in topological order, so the Concats go first.
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(concat_nodes + nodes)


def verify_step_graph(step_path: Path, config: MoeConfig, options: StepGraphOptions) -> None:
    """Raise when the step graph's inputs or outputs differ from the interface, or the traced MoE lost an expert."""
    graph = onnx.load(str(step_path), load_external_data=False).graph
    expected_inputs, expected_outputs = io_names(config, options.expert_capacity > 0)
    inputs = [value.name for value in graph.input]
    outputs = [value.name for value in graph.output]
    if inputs != expected_inputs:
        raise RuntimeError(f"step graph inputs {inputs} differ from the expected {expected_inputs}")
    if outputs != expected_outputs:
        raise RuntimeError(f"step graph outputs {outputs} differ from the expected {expected_outputs}")

    # Tracing drops the weights of an expert that it never calls, so each
    # expert weight must feed a MatMul (dense: the stacked weights' Concat).
    matmul_weights = {node.input[1] for node in graph.node if node.op_type == "MatMul"}
    for layer in range(config.num_hidden_layers):
        if options.moe_dispatch == "dense":
            expected = {f"layers.{layer}.moe.gate_up_weight", f"layers.{layer}.moe.down_weight"}
        else:
            expected = {
                f"layers.{layer}.moe.{kind}_{expert}" for kind in ("gate_up", "down") for expert in range(config.num_local_experts)
            }
        missing = sorted(expected - matmul_weights)
        if missing:
            raise RuntimeError(f"step graph has no MatMul over {missing}: tracing dropped an expert")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("training/out/ckpt/model.pt"), help="checkpoint written by train.py")
    parser.add_argument("--model-dir", type=Path, required=True, help="model directory whose onnx/model.onnx contains the same weights")
    parser.add_argument(
        "--moe-dispatch", choices=MOE_DISPATCHES, default="grouped", help="how the graph runs the experts (default grouped)"
    )
    parser.add_argument(
        "--expert-capacity",
        type=int,
        default=None,
        help="maximum (token, choice) assignments per expert per call, 0 for no limit (default: the checkpoint's expert_capacity)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--file-name",
        default=STEP_GRAPH_FILE,
        help=f"file name inside <model-dir>/onnx, which must also contain {WEIGHTS_FILE} (default {STEP_GRAPH_FILE})",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    model = load_model(args.checkpoint)
    capacity = model.config.expert_capacity if args.expert_capacity is None else args.expert_capacity
    options = StepGraphOptions(moe_dispatch=args.moe_dispatch, expert_capacity=capacity)
    path = export_step_graph(model, args.model_dir, options, args.opset, args.file_name)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB), weights from {args.model_dir / 'onnx' / WEIGHTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
