"""Export a trained checkpoint to ONNX in the decoder layout Optimum writes.

Writes <model-dir>/onnx/model.onnx (one file, no external data),
<model-dir>/config.json and <model-dir>/generation_config.json, then checks
the graph with onnx.checker and writes a parity fixture (inputs plus torch
logits) that training/check/ort-parity.mjs replays in onnxruntime-node.
With --step-graph it also writes onnx/model.step.onnx, the graph of Sanfang's
own engine, whose weights are byte ranges of model.onnx (see step_graph.py).

    /usr/bin/python3 training/trainer/export.py --checkpoint training/out/ckpt/model.pt \
        --model-dir models/sanfang-moe --bos-id 1 --eos-id 2 --pad-id 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Dict, List

import onnx
import torch
from torch import nn

from model import MoeConfig, MoeForCausalLM, left_padded_position_ids

OPSET_MIN = 16  # ScatterElements gained reduction="add", which the expert scatter needs, in opset 16.


class OnnxDecoder(nn.Module):
    """Flatten the past/present pairs into the positional inputs and outputs of the graph."""

    def __init__(self, model: MoeForCausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, past)
        flat: List[torch.Tensor] = [logits]
        for key, value in presents:
            flat.extend([key, value])
        return tuple(flat)


def load_model(checkpoint_path: Path) -> MoeForCausalLM:
    checkpoint = torch.load(checkpoint_path, map_location="cpu")
    config = MoeConfig.from_dict(checkpoint["config"])
    model = MoeForCausalLM(config)
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def io_names(config: MoeConfig):
    past_names: List[str] = []
    present_names: List[str] = []
    for layer in range(config.num_hidden_layers):
        for kind in ("key", "value"):
            past_names.append(f"past_key_values.{layer}.{kind}")
            present_names.append(f"present.{layer}.{kind}")
    return past_names, present_names


def export_onnx(model: MoeForCausalLM, onnx_path: Path, opset: int) -> None:
    config = model.config
    past_names, present_names = io_names(config)
    input_names = ["input_ids", "attention_mask", "position_ids", *past_names]
    output_names = ["logits", *present_names]
    dynamic_axes: Dict[str, Dict[int, str]] = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "past_sequence_length + sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for name in past_names:
        dynamic_axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in present_names:
        dynamic_axes[name] = {0: "batch_size", 2: "past_sequence_length + sequence_length"}

    # Trace with a nonzero past so the cache concat and the mask arithmetic are
    # recorded on symbolic lengths. The parity check then runs with past 0.
    batch, seq, past_length = 2, 3, 4
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    attention_mask = torch.ones(batch, past_length + seq, dtype=torch.long)
    position_ids = torch.arange(past_length, past_length + seq).unsqueeze(0).expand(batch, -1).contiguous()
    past_shape = (batch, config.num_key_value_heads, past_length, config.head_dim)
    past_flat = [torch.randn(past_shape, generator=generator) for _ in past_names]

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    # NOTE: with a tied LM head, constant folding stores the transposed
    # embedding as a second initializer (vocab_size x hidden_size floats).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            OnnxDecoder(model),
            (input_ids, attention_mask, position_ids, *past_flat),
            str(onnx_path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )


def verify_graph(onnx_path: Path, config: MoeConfig) -> None:
    """Raise when the graph fails onnx.checker or tracing lost an expert, an input or an output."""
    onnx.checker.check_model(str(onnx_path))
    graph = onnx.load(str(onnx_path)).graph
    past_names, present_names = io_names(config)
    expected_inputs = ["input_ids", "attention_mask", "position_ids", *past_names]
    expected_outputs = ["logits", *present_names]
    inputs = [value.name for value in graph.input]
    outputs = [value.name for value in graph.output]
    if inputs != expected_inputs:
        raise RuntimeError(f"exported inputs {inputs} differ from the expected {expected_inputs}")
    if outputs != expected_outputs:
        raise RuntimeError(f"exported outputs {outputs} differ from the expected {expected_outputs}")

    scatters = sum(1 for node in graph.node if node.op_type == "ScatterElements")
    expected_scatters = config.num_hidden_layers * config.num_local_experts
    if scatters != expected_scatters:
        raise RuntimeError(
            f"graph has {scatters} ScatterElements nodes, expected one per expert per layer "
            f"({expected_scatters}): tracing dropped or duplicated an expert"
        )
    for node in graph.node:
        if node.op_type != "ScatterElements":
            continue
        reduction = next((attr.s.decode() for attr in node.attribute if attr.name == "reduction"), "none")
        if reduction != "add":
            raise RuntimeError(f"ScatterElements node {node.name} has reduction {reduction!r}, expected 'add'")


def write_configs(model_dir: Path, config: MoeConfig, bos_id: int, eos_id: int, pad_id: int) -> None:
    hf_config = {
        "model_type": "llama",
        "architectures": ["SanfangMoeForCausalLM"],
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.intermediate_size,
        "num_local_experts": config.num_local_experts,
        "num_experts_per_tok": config.num_experts_per_tok,
        "max_position_embeddings": config.max_position_embeddings,
        "rope_theta": config.rope_theta,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }
    # Written only when set, so a model without them keeps its config.json.
    if config.num_zero_experts:
        hf_config["num_zero_experts"] = config.num_zero_experts
    if config.expert_capacity:
        hf_config["expert_capacity"] = config.expert_capacity
    generation_config = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    (model_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    (model_dir / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")


def rounded(tensor: torch.Tensor):
    """Nested lists with 7 significant digits, well inside the 1e-3 parity tolerance."""
    if tensor.dim() == 0:
        return float(f"{tensor.item():.7g}")
    return [rounded(row) for row in tensor] if tensor.dim() > 1 else [float(f"{v:.7g}") for v in tensor.tolist()]


@torch.no_grad()
def fixture_case(model: MoeForCausalLM, name: str, rows: List[List[int]]) -> dict:
    """Left-pad rows into one batch, then record prefill (past 0) and one greedy decode step."""
    width = max(len(row) for row in rows)
    pad_id = 0
    input_ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    position_ids = left_padded_position_ids(attention_mask)
    logits, presents = model(input_ids, attention_mask, position_ids)

    next_ids = logits[:, -1].argmax(dim=-1, keepdim=True)
    decode_mask = torch.cat([attention_mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)
    decode_positions = position_ids[:, -1:] + 1
    decode_logits, _ = model(next_ids, decode_mask, decode_positions, presents)

    return {
        "name": name,
        "prefill": {
            "input_ids": input_ids.tolist(),
            "attention_mask": attention_mask.tolist(),
            "position_ids": position_ids.tolist(),
            "logits": rounded(logits),
        },
        "decode": {
            "input_ids": next_ids.tolist(),
            "attention_mask": decode_mask.tolist(),
            "position_ids": decode_positions.tolist(),
            "logits": rounded(decode_logits),
        },
    }


def write_fixture(model: MoeForCausalLM, fixture_path: Path, seed: int) -> None:
    config = model.config
    generator = torch.Generator().manual_seed(seed)

    def random_row(length: int) -> List[int]:
        return torch.randint(0, config.vocab_size, (length,), generator=generator).tolist()

    fixture = {
        "tolerance": 1e-3,
        "num_hidden_layers": config.num_hidden_layers,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "cases": [
            fixture_case(model, "single", [random_row(7)]),
            # Row 1 is shorter, so it carries 4 left-padding positions.
            fixture_case(model, "left-padded", [random_row(9), random_row(5)]),
        ],
    }
    fixture_path.parent.mkdir(parents=True, exist_ok=True)
    fixture_path.write_text(json.dumps(fixture) + "\n")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("training/out/ckpt/model.pt"), help="checkpoint written by train.py")
    parser.add_argument("--model-dir", type=Path, required=True, help="output model directory")
    parser.add_argument("--bos-id", type=int, required=True, help="bos_token_id for config.json")
    parser.add_argument("--eos-id", type=int, required=True, help="eos_token_id for config.json")
    parser.add_argument("--pad-id", type=int, required=True, help="pad_token_id for config.json")
    parser.add_argument("--opset", type=int, default=17, help=f"ONNX opset, at least {OPSET_MIN} (default 17)")
    parser.add_argument(
        "--fixture",
        type=Path,
        default=Path("training/out/onnx-parity-fixture.json"),
        help="where to write the parity fixture for training/check/ort-parity.mjs",
    )
    parser.add_argument("--fixture-seed", type=int, default=1234, help="seed for the fixture's random prompts")
    parser.add_argument(
        "--step-graph",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also write onnx/model.step.onnx with step_graph.py's defaults (default: off)",
    )
    args = parser.parse_args(argv)

    if args.opset < OPSET_MIN:
        parser.error(f"--opset must be at least {OPSET_MIN}, got {args.opset}")
    torch.set_num_threads(2)

    model = load_model(args.checkpoint)
    onnx_path = args.model_dir / "onnx" / "model.onnx"
    export_onnx(model, onnx_path, args.opset)
    verify_graph(onnx_path, model.config)
    write_configs(args.model_dir, model.config, args.bos_id, args.eos_id, args.pad_id)
    write_fixture(model, args.fixture, args.fixture_seed)

    size_mb = os.path.getsize(onnx_path) / 1e6
    print(f"wrote {onnx_path} ({size_mb:.1f} MB), config.json, generation_config.json")
    print(f"wrote parity fixture {args.fixture}")
    if args.step_graph:
        # Imported here because step_graph imports load_model from this module.
        from step_graph import export_step_graph
        from step_modules import StepGraphOptions

        step_path = export_step_graph(model, args.model_dir, StepGraphOptions(expert_capacity=model.config.expert_capacity))
        print(f"wrote {step_path} ({os.path.getsize(step_path) / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
