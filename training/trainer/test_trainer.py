"""Unit tests for the trainer: run with

    /usr/bin/python3 -m unittest discover -s training/trainer -p 'test_*.py'
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F

from export import export_onnx, verify_graph, write_configs
from model import MoeConfig, MoeForCausalLM, SparseMoe, apply_rotary, left_padded_position_ids
from step_graph import export_step_graph
from step_modules import MASK_FLOOR, MOE_DISPATCHES, StepDecoder, StepGraphOptions, io_names
from train import IGNORE_INDEX, Example, batch_loss, collate, plan_batches

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48)


def tiny_model(seed: int = 0, **overrides) -> MoeForCausalLM:
    torch.manual_seed(seed)
    return MoeForCausalLM(MoeConfig(**{**TINY, **overrides})).eval()


def dense_moe_reference(moe: SparseMoe, x: torch.Tensor) -> torch.Tensor:
    """Run every expert on every token and mix with the renormalised top-k weights."""
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(moe.router(flat), dim=-1)
    top_weights, top_experts = probs.topk(moe.top_k, dim=-1)
    top_weights = top_weights / top_weights.sum(dim=-1, keepdim=True)
    gates = torch.zeros_like(probs).scatter(1, top_experts, top_weights)
    every_expert = torch.stack([expert(flat) for expert in moe.experts], dim=1)
    return (gates[:, :, None] * every_expert).sum(dim=1).view_as(x)


class ModelTest(unittest.TestCase):
    @torch.no_grad()
    def test_kv_cache_matches_full_pass(self):
        model = tiny_model()
        ids = torch.randint(0, 50, (2, 9))
        mask = torch.ones(2, 9, dtype=torch.long)
        positions = torch.arange(9).expand(2, -1)

        full, _ = model(ids, mask, positions)
        prefix, past = model(ids[:, :6], mask[:, :6], positions[:, :6])
        rest, presents = model(ids[:, 6:], mask, positions[:, 6:], past)

        torch.testing.assert_close(prefix, full[:, :6], atol=1e-5, rtol=0)
        torch.testing.assert_close(rest, full[:, 6:], atol=1e-5, rtol=0)
        self.assertEqual(presents[0][0].shape, (2, 2, 9, 8))

    @torch.no_grad()
    def test_left_padded_row_matches_row_alone(self):
        model = tiny_model()
        row = torch.randint(1, 50, (1, 4))
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), row], dim=1)
        mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])

        batched, _ = model(padded, mask, left_padded_position_ids(mask))
        alone, _ = model(row, torch.ones(1, 4, dtype=torch.long), torch.arange(4)[None])

        self.assertTrue(torch.isfinite(batched).all())
        torch.testing.assert_close(batched[:, 3:], alone, atol=1e-5, rtol=0)

    @torch.no_grad()
    def test_sparse_dispatch_matches_dense_reference(self):
        model = tiny_model()
        moe = model.layers[0].moe
        x = torch.randn(3, 5, 32)

        torch.testing.assert_close(moe(x).hidden, dense_moe_reference(moe, x), atol=1e-5, rtol=0)

    @torch.no_grad()
    def test_expert_without_tokens(self):
        model = tiny_model()
        moe = model.layers[0].moe
        # With positive inputs, an all-negative router row puts expert 3 far
        # below the others for every token.
        moe.router.weight[3].fill_(-1.0)
        x = torch.rand(2, 4, 32) + 0.1

        output = moe(x, with_stats=True)

        self.assertEqual(output.expert_counts[3].item(), 0)
        torch.testing.assert_close(output.hidden, dense_moe_reference(moe, x), atol=1e-5, rtol=0)

    def test_balance_loss_reaches_router(self):
        model = tiny_model()
        model.train()
        ids = torch.randint(0, 50, (2, 6))
        output = model.decode(ids, torch.ones_like(ids), torch.arange(6).expand(2, -1), with_stats=True)

        output.aux_loss.backward()

        self.assertGreater(model.layers[0].moe.router.weight.grad.abs().sum().item(), 0)
        self.assertEqual(output.expert_counts.shape, (2, 4))
        self.assertEqual(output.expert_counts.sum().item(), 2 * 2 * 6 * 2)


class TrainDataTest(unittest.TestCase):
    def test_collate_labels_from_loss_from(self):
        batch = collate([Example([1, 5, 6, 7, 3], loss_from=3), Example([1, 8, 3], loss_from=2)], pad_id=0)

        self.assertEqual(batch.input_ids.tolist(), [[1, 5, 6, 7], [1, 8, 0, 0]])
        self.assertEqual(batch.attention_mask.tolist(), [[1, 1, 1, 1], [1, 1, 0, 0]])
        self.assertEqual(batch.labels.tolist(), [[IGNORE_INDEX, IGNORE_INDEX, 7, 3], [IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX]])
        self.assertEqual(batch.real_tokens, 6)

    def test_plan_batches_limits(self):
        lengths = [random.Random(i).randint(1, 100) for i in range(500)]

        batches = plan_batches(lengths, batch_size=16, max_batch_tokens=600, rng=random.Random(0))

        self.assertEqual(sorted(i for batch in batches for i in batch), list(range(500)))
        for batch in batches:
            self.assertLessEqual(len(batch), 16)
            self.assertLessEqual(len(batch) * max(lengths[i] for i in batch), 600)


class ExportTest(unittest.TestCase):
    def test_export_keeps_every_expert(self):
        model = tiny_model()
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "onnx" / "model.onnx"

            export_onnx(model, path, opset=17)

            verify_graph(path, model.config)



def bias_from_mask(mask: torch.Tensor, seq: int) -> torch.Tensor:
    """Return the step graph's [batch, seq, past + seq] bias for model.decode's mask rule (causal, real keys only)."""
    total = mask.shape[1]
    key_index = torch.arange(total)
    query_index = torch.arange(seq) + total - seq
    allowed = (key_index[None, :] <= query_index[:, None])[None] & (mask[:, None, :] == 1)
    return torch.where(allowed, torch.tensor(0.0), torch.tensor(MASK_FLOOR))


def empty_past(config: MoeConfig, batch: int):
    shape = (batch, config.num_key_value_heads, 0, config.head_dim)
    return [torch.zeros(shape) for _ in range(2 * config.num_hidden_layers)]


def flat_past(presents):
    return [tensor for pair in presents for tensor in pair]


def step_outputs(decoder: StepDecoder, ids, positions, bias, past) -> dict:
    _, names = io_names(decoder.config, decoder.options.expert_capacity > 0)
    return dict(zip(names, decoder(ids, positions, bias, *past)))


def dropped_by_capacity(counts: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Return the per-layer number of assignments past capacity, from [layers, routes] counts."""
    expert_counts = counts[:, :num_experts]
    return (expert_counts - expert_counts.clamp(max=capacity)).sum(dim=1)


class StepGraphTest(unittest.TestCase):
    @torch.no_grad()
    def assert_step_matches_model(self, model: MoeForCausalLM, options: StepGraphOptions):
        """Compare StepDecoder with the model on a left-padded prefill and one decode step."""
        config = model.config
        decoder = StepDecoder(model, options).eval()
        ids = torch.randint(1, config.vocab_size, (2, 7))
        mask = torch.ones(2, 7, dtype=torch.long)
        mask[1, :3] = 0
        positions = left_padded_position_ids(mask)

        logits, presents = model(ids, mask, positions)
        outputs = step_outputs(decoder, ids, positions, bias_from_mask(mask, 7), empty_past(config, 2))
        torch.testing.assert_close(outputs["logits"], logits[:, -1], atol=1e-5, rtol=0)
        for layer in range(config.num_hidden_layers):
            torch.testing.assert_close(outputs[f"new_key.{layer}"][1, :, 3:], presents[layer][0][1, :, 3:], atol=1e-5, rtol=0)
            torch.testing.assert_close(outputs[f"new_value.{layer}"][1, :, 3:], presents[layer][1][1, :, 3:], atol=1e-5, rtol=0)
        # Layer 0's query depends on the embeddings only: after RoPE, before the 1/sqrt(head_dim) scale.
        attention = model.layers[0].attention
        cos, sin = model.rotary(positions)
        queries = attention.q_proj(model.layers[0].input_norm(model.embed_tokens(ids)))
        queries = apply_rotary(queries.view(2, 7, config.num_attention_heads, config.head_dim).transpose(1, 2), cos, sin)
        torch.testing.assert_close(outputs["last_query.0"], queries[:, :, -1], atol=1e-5, rtol=0)
        self.assertTrue(all(torch.isfinite(tensor).all() for tensor in outputs.values()))

        step_past = []
        for layer in range(config.num_hidden_layers):
            step_past += [outputs[f"new_key.{layer}"], outputs[f"new_value.{layer}"]]
        next_ids = logits[:, -1].argmax(dim=-1, keepdim=True)
        decode_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
        decode_positions = positions[:, -1:] + 1
        decode_logits, _ = model(next_ids, decode_mask, decode_positions, presents)
        decode_outputs = step_outputs(decoder, next_ids, decode_positions, bias_from_mask(decode_mask, 1), step_past)
        torch.testing.assert_close(decode_outputs["logits"], decode_logits[:, -1], atol=1e-5, rtol=0)

    def test_step_decoder_matches_model(self):
        model = tiny_model()
        for dispatch in MOE_DISPATCHES:
            with self.subTest(dispatch=dispatch):
                self.assert_step_matches_model(model, StepGraphOptions(moe_dispatch=dispatch))

    def test_step_decoder_with_zero_experts(self):
        model = tiny_model(num_zero_experts=2)
        for dispatch in MOE_DISPATCHES:
            with self.subTest(dispatch=dispatch):
                self.assert_step_matches_model(model, StepGraphOptions(moe_dispatch=dispatch))

    @torch.no_grad()
    def test_zero_experts_are_identity(self):
        model = tiny_model(num_zero_experts=2)
        moe = model.layers[0].moe
        # With positive inputs, the zero experts (routes 4 and 5) win every top-2.
        moe.router.weight[:4].fill_(-1.0)
        moe.router.weight[4:].fill_(1.0)
        x = torch.rand(2, 3, 32) + 0.1

        output = moe(x, with_stats=True)

        torch.testing.assert_close(output.hidden, x, atol=1e-6, rtol=0)
        self.assertEqual(output.expert_counts.tolist(), [0, 0, 0, 0, 6, 6])

    @torch.no_grad()
    def test_capacity_drops_late_assignments(self):
        capacity = 3
        model = tiny_model()
        limited = tiny_model(expert_capacity=capacity)
        limited.load_state_dict(model.state_dict())
        ids = torch.randint(1, 50, (2, 6))
        mask = torch.ones_like(ids)
        positions = torch.arange(6).expand(2, -1)

        expected = limited.decode(ids, mask, positions, with_stats=True)
        expected_logits = limited.logits(expected.hidden)[:, -1]
        expected_dropped = dropped_by_capacity(expected.expert_counts, 4, capacity)
        unlimited_logits, _ = model(ids, mask, positions)

        # 12 tokens x 2 choices over 4 experts: some expert must exceed 3.
        self.assertTrue((expected_dropped > 0).all())
        self.assertGreater((expected_logits - unlimited_logits[:, -1]).abs().max().item(), 1e-4)
        for dispatch in MOE_DISPATCHES:
            with self.subTest(dispatch=dispatch):
                decoder = StepDecoder(limited, StepGraphOptions(moe_dispatch=dispatch, expert_capacity=capacity))
                outputs = step_outputs(decoder, ids, positions, bias_from_mask(mask, 6), empty_past(limited.config, 2))
                torch.testing.assert_close(outputs["logits"], expected_logits, atol=1e-5, rtol=0)
                torch.testing.assert_close(outputs["expert_counts"], expected.expert_counts, atol=0, rtol=0)
                torch.testing.assert_close(outputs["expert_dropped"], expected_dropped, atol=0, rtol=0)

    def test_zero_experts_train_export_and_match(self):
        model = tiny_model(num_zero_experts=2)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        router_before = model.layers[0].moe.router.weight.detach().clone()
        batch = collate([Example([1, 5, 6, 7, 3, 9], loss_from=2), Example([1, 8, 3], loss_from=1)], pad_id=0)

        loss_sum, targets, aux_loss, expert_counts = batch_loss(model, batch, with_stats=True)
        (loss_sum / targets + 0.01 * aux_loss).backward()
        optimizer.step()
        model.eval()

        self.assertTrue(torch.isfinite(loss_sum))
        self.assertEqual(expert_counts.shape, (2, 6))
        self.assertEqual(expert_counts.sum().item(), 2 * batch.real_tokens * 2)
        self.assertFalse(torch.equal(model.layers[0].moe.router.weight, router_before))

        with tempfile.TemporaryDirectory() as directory:
            model_dir = Path(directory)
            export_onnx(model, model_dir / "onnx" / "model.onnx", opset=17)
            verify_graph(model_dir / "onnx" / "model.onnx", model.config)
            write_configs(model_dir, model.config, bos_id=1, eos_id=3, pad_id=0)
            fixture_path = model_dir / "fixture.json"
            fixture_path.write_text(json.dumps(step_fixture(model)))
            for dispatch in MOE_DISPATCHES:
                with self.subTest(dispatch=dispatch):
                    step_path = export_step_graph(model, model_dir, StepGraphOptions(moe_dispatch=dispatch), file_name=f"{dispatch}.onnx")

                    self.assert_weights_linked(step_path)
                    self.run_node_parity(model_dir, step_path, fixture_path)

    def test_capacity_graph_matches_torch(self):
        capacity = 3
        model = tiny_model(num_zero_experts=2, expert_capacity=capacity)
        with tempfile.TemporaryDirectory() as directory:
            model_dir = Path(directory)
            export_onnx(model, model_dir / "onnx" / "model.onnx", opset=17)
            write_configs(model_dir, model.config, bos_id=1, eos_id=3, pad_id=0)
            fixture = step_fixture(model)
            fixture_path = model_dir / "fixture.json"
            fixture_path.write_text(json.dumps(fixture))
            dropped = sum(sum(case["expected"]["expert_dropped"]) for case in fixture["cases"])

            self.assertGreater(dropped, 0)
            for dispatch in MOE_DISPATCHES:
                with self.subTest(dispatch=dispatch):
                    options = StepGraphOptions(moe_dispatch=dispatch, expert_capacity=capacity)
                    step_path = export_step_graph(model, model_dir, options, file_name=f"{dispatch}.onnx")

                    self.run_node_parity(model_dir, step_path, fixture_path)

    def test_export_refuses_other_weights(self):
        model = tiny_model()
        with tempfile.TemporaryDirectory() as directory:
            model_dir = Path(directory)
            export_onnx(tiny_model(seed=1), model_dir / "onnx" / "model.onnx", opset=17)

            with self.assertRaisesRegex(RuntimeError, "not in model.onnx"):
                export_step_graph(model, model_dir)

    def assert_weights_linked(self, step_path: Path):
        """Check that every weight is a byte range of model.onnx and the metadata records its hash."""
        graph_model = onnx.load(str(step_path), load_external_data=False)
        embedded = [t for t in graph_model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
        linked = [t for t in graph_model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        # Only the RoPE constants (the rotation matrix and inverse frequencies) stay inside.
        self.assertLessEqual(sum(len(t.raw_data) for t in embedded), 8 * 8 * 4 + 4 * 4)
        self.assertTrue(all(entry.value == "model.onnx" for t in linked for entry in t.external_data if entry.key == "location"))
        metadata = {entry.key: entry.value for entry in graph_model.metadata_props}
        weights_bytes = (step_path.parent / "model.onnx").read_bytes()
        self.assertEqual(metadata["sanfang.weights_sha256"], hashlib.sha256(weights_bytes).hexdigest())

    def run_node_parity(self, model_dir: Path, step_path: Path, fixture_path: Path):
        node = shutil.which("node")
        if node is None or not (REPO_ROOT / "node_modules" / "onnxruntime-node").exists():
            self.skipTest("node or node_modules/onnxruntime-node is missing, so the graph cannot run in ONNX Runtime")
        result = subprocess.run(
            [
                node,
                "training/check/step-parity.mjs",
                str(model_dir),
                "--step-graph",
                str(step_path),
                "--fixture",
                str(fixture_path),
                "--no-timing",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, msg=result.stdout + result.stderr)


@torch.no_grad()
def step_fixture(model: MoeForCausalLM) -> dict:
    """Return step graph inputs with torch's outputs for step-parity.mjs --fixture: a prefill and a decode step.

    No position is padding, because model.decode counts experts over real tokens only.
    """
    config = model.config
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(1, config.vocab_size, (2, 5), generator=generator)
    mask = torch.ones_like(ids)
    positions = torch.arange(5).expand(2, -1)
    prefill = model.decode(ids, mask, positions, with_stats=True)
    next_ids = model.logits(prefill.hidden)[:, -1].argmax(dim=-1, keepdim=True)
    decode_mask = torch.ones(2, 6, dtype=torch.long)
    decode = model.decode(next_ids, decode_mask, torch.full((2, 1), 5), prefill.presents, with_stats=True)

    def case(name, step_ids, step_positions, step_mask, past, output):
        seq = step_ids.shape[1]
        expected = {"logits": model.logits(output.hidden)[:, -1].flatten().tolist(), "expert_counts": output.expert_counts.flatten().tolist()}
        if config.expert_capacity:
            dropped = dropped_by_capacity(output.expert_counts, config.num_local_experts, config.expert_capacity)
            expected["expert_dropped"] = dropped.tolist()
        feeds_past = {}
        for layer, (key, value) in enumerate(output.presents):
            expected[f"new_key.{layer}"] = key[:, :, -seq:].flatten().tolist()
            expected[f"new_value.{layer}"] = value[:, :, -seq:].flatten().tolist()
            for kind, tensor in (("key", past[2 * layer]), ("value", past[2 * layer + 1])):
                feeds_past[f"past_{kind}.{layer}"] = {"dims": list(tensor.shape), "data": tensor.flatten().tolist()}
        return {
            "name": name,
            "input_ids": step_ids.tolist(),
            "position_ids": step_positions.tolist(),
            "attention_bias": bias_from_mask(step_mask, seq).tolist(),
            "past": feeds_past,
            "expected": expected,
        }

    return {
        "tolerance": 1e-4,
        "cases": [
            case("prefill", ids, positions, mask, empty_past(config, 2), prefill),
            case("decode", next_ids, torch.full((2, 1), 5), decode_mask, flat_past(prefill.presents), decode),
        ],
    }


if __name__ == "__main__":
    unittest.main()
