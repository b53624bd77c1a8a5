"""Unit tests for the trainer: run with

    /usr/bin/python3 -m unittest discover -s training/trainer -p 'test_*.py'
"""

from __future__ import annotations

import random
import tempfile
import unittest
from pathlib import Path

import torch
import torch.nn.functional as F

from export import export_onnx, verify_graph
from model import MoeConfig, MoeForCausalLM, SparseMoe, left_padded_position_ids
from train import IGNORE_INDEX, Example, collate, plan_batches

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48)


def tiny_model(seed: int = 0) -> MoeForCausalLM:
    torch.manual_seed(seed)
    return MoeForCausalLM(MoeConfig(**TINY)).eval()


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


if __name__ == "__main__":
    unittest.main()
