"""Torch modules of the step graph, built over a trained MoeForCausalLM's weights.

StepDecoder computes the same function as MoeForCausalLM for the tokens of
one engine call, with the interface that step_graph.py exports. It returns the
new tokens' keys and values instead of the whole cache and logits for the
last position of each row only. It takes an additive attention bias in place
of the mask.

Weights are kept in the layout of model.onnx (each Linear weight transposed to
[in, out]) so that step_graph.py can point the exported initializers at the
same bytes inside that file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from model import Attention, MoeConfig, MoeForCausalLM, RMSNorm, SparseMoe

# Bias values below this are raised to it. Attention scores of a trained model
# are far smaller than 1e9, so a masked column still gets probability 0 whenever
# its row has one unmasked column. A row with every column masked gets a finite
# average of the values instead of NaN, even when the bias contains -inf.
MASK_FLOOR = -1e9
MOE_DISPATCHES = ("dense", "grouped", "sparse")


@dataclass(frozen=True)
class StepGraphOptions:
    """Export choices that change the graph but not the weights.

    moe_dispatch picks how the experts run:
    - "grouped" sorts the (token, choice) slots by expert once and runs each
      expert on one contiguous slice of them;
    - "dense" runs every expert on every token with stacked weights (two
      MatMul nodes per layer) and zeroes the unchosen experts' gates;
    - "sparse" finds each expert's tokens with NonZero, as model.onnx does.
    On the default model (4 experts, top-2) and a 2-core VM, grouped was the
    fastest or within run-to-run spread of it for decode at batch 1, 16 and
    64 and for a 256-token prefill, so it is the default. Dense needed 1.5x
    the time of grouped at batch 1 and 1.25x on the prefill. The timings are
    in the model card and come from training/check/step-parity.mjs.
    expert_capacity is the maximum number of (token, choice) assignments each
    real expert takes per call, in token order (0: no limit). A positive value
    adds the expert_dropped output.
    """

    moe_dispatch: str = "grouped"
    expert_capacity: int = 0


def io_names(config: MoeConfig, with_dropped: bool) -> Tuple[List[str], List[str]]:
    """Return the step graph's input and output names in graph order."""
    inputs = ["input_ids", "position_ids", "attention_bias"]
    outputs = ["logits"]
    for layer in range(config.num_hidden_layers):
        inputs += [f"past_key.{layer}", f"past_value.{layer}"]
        outputs += [f"new_key.{layer}", f"new_value.{layer}"]
    outputs += [f"last_query.{layer}" for layer in range(config.num_hidden_layers)]
    outputs.append("expert_counts")
    if with_dropped:
        outputs.append("expert_dropped")
    return inputs, outputs


def rotate_half_matrix(head_dim: int) -> torch.Tensor:
    """Return R with x @ R == model.rotate_half(x). The product is exact, because R contains only 0 and +-1."""
    half = head_dim // 2
    rotation = torch.zeros(head_dim, head_dim)
    for column in range(half):
        rotation[column + half, column] = -1.0
        rotation[column, column + half] = 1.0
    return rotation


class StepRotary(nn.Module):
    """RoPE cos/sin tables [batch, seq, 1, head_dim], which broadcast over the heads of a [batch, seq, heads, head_dim] tensor."""

    def __init__(self, model: MoeForCausalLM):
        super().__init__()
        self.register_buffer("inv_freq", model.rotary.inv_freq.clone())

    def forward(self, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids.to(torch.float32)[:, :, None] * self.inv_freq[None, None, :]
        angles = torch.cat([freqs, freqs], dim=-1)[:, :, None, :]
        return angles.cos(), angles.sin()


class StepNorm(nn.Module):
    """RMSNorm written as x / sqrt(mean(x^2) + eps) * weight, the form that ONNX Runtime fuses into one node."""

    def __init__(self, norm: RMSNorm):
        super().__init__()
        self.register_buffer("weight", norm.weight.clone())
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return x / torch.sqrt(variance + self.eps) * self.weight


class StepAttention(nn.Module):
    """Grouped-query attention that reads the past keys and values without copying them.

    Scores against the past and against the new tokens are computed apart and
    concatenated (a small [.., rows, past + seq] tensor). After the bias and
    softmax, the context is probs_past @ V_past + probs_new @ V_new.
    """

    def __init__(self, attention: Attention):
        super().__init__()
        self.num_heads = attention.num_heads
        self.num_kv_heads = attention.num_kv_heads
        self.head_dim = attention.head_dim
        self.group_size = attention.group_size
        self.scale = attention.scale
        # One [hidden, (heads + 2 * kv_heads) * head_dim] projection. Each part
        # is the transposed weight, as model.onnx stores it.
        self.register_buffer(
            "qkv_weight",
            torch.cat([attention.q_proj.weight.t(), attention.k_proj.weight.t(), attention.v_proj.weight.t()], dim=1),
        )
        self.register_buffer("o_weight", attention.o_proj.weight.t().contiguous())

    def forward(self, x, batch, seq, cos, sin, rotation, bias, past_key, past_value, past_length):
        """Attend for x [batch * seq, hidden]; return (output [batch * seq, hidden], new_key, new_value, last_query)."""
        rotated_heads = self.num_heads + self.num_kv_heads
        qkv = torch.matmul(x, self.qkv_weight).view(batch, seq, rotated_heads + self.num_kv_heads, self.head_dim)
        qk, v = qkv.split([rotated_heads, self.num_kv_heads], dim=2)
        # RoPE on queries and keys at once: x * cos + rotate_half(x) * sin.
        qk = qk * cos + torch.matmul(qk, rotation) * sin
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=2)
        last_query = q[:, -1]
        new_key = k.transpose(1, 2)
        new_value = v.transpose(1, 2)

        # Query head h reads KV head h // group_size. The group is a broadcast
        # axis of its own, [batch, kv_heads, group, seq, head_dim], so a decode
        # step multiplies one query row per head. MLAS runs a one-row product
        # without packing the keys. Folding the group into the rows (two rows)
        # made it pack the keys of every row and head first.
        q = (q * self.scale).transpose(1, 2).reshape(batch, self.num_kv_heads, self.group_size, seq, self.head_dim)
        # ONNX Runtime fuses the transpose of the past keys into the MatMul
        # (FusedMatMul with transB), so they are read in place.
        past_scores = torch.matmul(q, past_key.unsqueeze(2).transpose(3, 4))
        new_scores = torch.matmul(q, new_key.unsqueeze(2).transpose(3, 4))
        probs = torch.softmax(torch.cat([past_scores, new_scores], dim=-1) + bias, dim=-1)
        context = torch.matmul(probs[..., :past_length], past_value.unsqueeze(2)) + torch.matmul(probs[..., past_length:], new_value.unsqueeze(2))

        # [batch, kv_heads, group, seq, head_dim] is [batch, heads, seq, head_dim].
        context = context.view(batch, self.num_heads, seq, self.head_dim).transpose(1, 2)
        context = context.reshape(-1, self.num_heads * self.head_dim)
        return torch.matmul(context, self.o_weight), new_key, new_value, last_query


class Routing(nn.Module):
    """Top-k routing of the dense and sparse dispatches.

    forward returns the gate weights [tokens, routes] (zero for unchosen
    routes), the 0/1 choices [tokens, routes] and the per-route counts. Gates
    are probs * chosen / sum(top-k probs), which equals SparseMoe's renormalised
    top_weights at the chosen routes.
    """

    def __init__(self, moe: SparseMoe):
        super().__init__()
        self.top_k = moe.top_k
        self.register_buffer("router_weight", moe.router.weight.t().contiguous())

    def forward(self, x: torch.Tensor):
        probs = torch.softmax(torch.matmul(x, self.router_weight), dim=-1)
        top_weights, top_routes = probs.topk(self.top_k, dim=-1)
        chosen = torch.zeros_like(probs).scatter(1, top_routes, 1.0)
        gates = probs * chosen / top_weights.sum(dim=-1, keepdim=True)
        return gates, chosen, chosen.sum(dim=0)


def capacity_keep(chosen: torch.Tensor, capacity: int) -> torch.Tensor:
    """Return the 0/1 [tokens, experts] matrix of the choices that fit the capacity, counted in token order."""
    rank = torch.cumsum(chosen, dim=0)
    return chosen * (rank <= capacity).to(chosen.dtype)


class DenseStepMoe(nn.Module):
    """Every expert on every token, with the unchosen experts' gates at zero.

    gate_up_weight is [hidden, experts * 2 * intermediate] and down_weight is
    [experts * intermediate, hidden], so the experts cost two MatMul nodes:
    sum_e g_e * (h_e @ D_e) equals concat_e(g_e * h_e) @ vstack_e(D_e).
    """

    def __init__(self, moe: SparseMoe, capacity: int):
        super().__init__()
        self.num_experts = moe.num_experts
        self.num_zero_experts = moe.num_zero_experts
        self.intermediate_size = moe.experts[0].intermediate_size
        self.capacity = capacity
        self.routing = Routing(moe)
        self.register_buffer("gate_up_weight", torch.cat([e.gate_up_proj.weight.t() for e in moe.experts], dim=1))
        self.register_buffer("down_weight", torch.cat([e.down_proj.weight.t() for e in moe.experts], dim=0))

    def forward(self, x: torch.Tensor):
        """Mix the experts for x [tokens, hidden]; return (output, counts [routes], dropped or None)."""
        gates, chosen, counts = self.routing(x)
        expert_gates = gates[:, : self.num_experts] if self.num_zero_experts else gates
        dropped = None
        if self.capacity:
            expert_chosen = chosen[:, : self.num_experts]
            keep = capacity_keep(expert_chosen, self.capacity)
            expert_gates = expert_gates * keep
            dropped = (expert_chosen - keep).sum()

        # Columns e * 2I .. e * 2I + I - 1 are expert e's gate projection, the next I its up projection.
        gate_up = torch.matmul(x, self.gate_up_weight).view(-1, self.num_experts, 2, self.intermediate_size)
        gate, up = gate_up.split(1, dim=2)
        activated = F.silu(gate) * up * expert_gates[:, :, None, None]
        output = torch.matmul(activated.reshape(-1, self.num_experts * self.intermediate_size), self.down_weight)
        if self.num_zero_experts:
            output = output + gates[:, self.num_experts :].sum(dim=-1, keepdim=True) * x
        return output, counts, dropped


class SparseStepMoe(nn.Module):
    """Each expert runs only on its tokens (NonZero, Gather, ScatterElements), as in model.SparseMoe."""

    def __init__(self, moe: SparseMoe, capacity: int):
        super().__init__()
        self.num_experts = moe.num_experts
        self.num_zero_experts = moe.num_zero_experts
        self.hidden_size = moe.hidden_size
        self.intermediate_size = moe.experts[0].intermediate_size
        self.capacity = capacity
        self.routing = Routing(moe)
        for index, expert in enumerate(moe.experts):
            self.register_buffer(f"gate_up_{index}", expert.gate_up_proj.weight.t().contiguous())
            self.register_buffer(f"down_{index}", expert.down_proj.weight.t().contiguous())

    def forward(self, x: torch.Tensor):
        """Mix the experts for x [tokens, hidden]; return (output, counts [routes], dropped or None)."""
        gates, chosen, counts = self.routing(x)
        output = torch.zeros_like(x)
        for index in range(self.num_experts):
            tokens = torch.nonzero(chosen[:, index])[:, 0]
            if self.capacity:
                # nonzero lists tokens in ascending order, which is token order.
                tokens = tokens[: self.capacity]
            gate_up = torch.matmul(x.index_select(0, tokens), getattr(self, f"gate_up_{index}"))
            activated = F.silu(gate_up[:, : self.intermediate_size]) * gate_up[:, self.intermediate_size :]
            weights = gates[:, index].index_select(0, tokens)[:, None]
            routed = torch.matmul(activated, getattr(self, f"down_{index}")) * weights
            output = output.scatter_add(0, tokens[:, None].expand(-1, self.hidden_size), routed)
        dropped = None
        if self.capacity:
            expert_counts = counts[: self.num_experts]
            dropped = (expert_counts - expert_counts.clamp(max=self.capacity)).sum()
        if self.num_zero_experts:
            output = output + gates[:, self.num_experts :].sum(dim=-1, keepdim=True) * x
        return output, counts, dropped


class SplitBySizes(torch.autograd.Function):
    """Split a tensor along axis 0 into len(sizes) parts whose sizes are a runtime tensor.

    torch.split needs Python ints, which tracing would freeze into constants.
    This exports as one ONNX Split node with the sizes as its second input.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: torch.Tensor, parts: int):
        return tuple(torch.split(x, sizes.tolist(), dim=0))

    @staticmethod
    def symbolic(g, x, sizes, parts: int):
        return g.op("Split", x, sizes, axis_i=0, outputs=parts)


class GroupedStepMoe(nn.Module):
    """Sparse dispatch with one sort: each expert runs one MatMul pair on a contiguous slice of its slots.

    The (token, choice) slots are sorted by route, keeping token order within
    a route, and the tokens are gathered in that order. One Split cuts them
    into per-route slices. A zero expert's slice passes through unchanged.
    The weighted outputs are added back with one ScatterElements(add).
    """

    def __init__(self, moe: SparseMoe, capacity: int):
        super().__init__()
        self.num_experts = moe.num_experts
        self.num_routes = moe.num_routes
        self.top_k = moe.top_k
        self.hidden_size = moe.hidden_size
        self.intermediate_size = moe.experts[0].intermediate_size
        self.capacity = capacity
        self.register_buffer("router_weight", moe.router.weight.t().contiguous())
        for index, expert in enumerate(moe.experts):
            self.register_buffer(f"gate_up_{index}", expert.gate_up_proj.weight.t().contiguous())
            self.register_buffer(f"down_{index}", expert.down_proj.weight.t().contiguous())

    def forward(self, x: torch.Tensor):
        """Mix the experts for x [tokens, hidden]; return (output, counts [routes], dropped or None)."""
        probs = torch.softmax(torch.matmul(x, self.router_weight), dim=-1)
        top_weights, top_routes = probs.topk(self.top_k, dim=-1)
        top_weights = top_weights / top_weights.sum(dim=-1, keepdim=True)
        slot_routes = top_routes.reshape(-1)
        slot_weights = top_weights.reshape(-1)
        counts = torch.zeros(self.num_routes, dtype=torch.long).scatter_add(0, slot_routes, torch.ones_like(slot_routes))

        # Slot s is choice s % top_k of token s // top_k. Keys are unique, so
        # sorting them orders slots by route and then by token.
        slot_index = torch.arange(slot_routes.shape[0])
        order = torch.argsort(slot_routes * slot_routes.shape[0] + slot_index)
        sorted_tokens = torch.div(order, self.top_k, rounding_mode="trunc")
        sorted_weights = slot_weights.index_select(0, order)
        pieces = SplitBySizes.apply(x.index_select(0, sorted_tokens), counts, self.num_routes)

        outputs = []
        for index in range(self.num_experts):
            gate_up = torch.matmul(pieces[index], getattr(self, f"gate_up_{index}"))
            activated = F.silu(gate_up[:, : self.intermediate_size]) * gate_up[:, self.intermediate_size :]
            outputs.append(torch.matmul(activated, getattr(self, f"down_{index}")))
        outputs.extend(pieces[self.num_experts :])
        dropped = None
        if self.capacity:
            starts = torch.cumsum(counts, dim=0) - counts
            sorted_routes = slot_routes.index_select(0, order)
            rank = slot_index - starts.index_select(0, sorted_routes)
            keep = (rank < self.capacity) | (sorted_routes >= self.num_experts)
            sorted_weights = sorted_weights * keep.to(sorted_weights.dtype)
            expert_counts = counts[: self.num_experts]
            dropped = (expert_counts - expert_counts.clamp(max=self.capacity)).sum().to(x.dtype)

        # Every token has exactly top_k slots, so the inverse permutation puts
        # the weighted outputs back in slot order and a sum over each token's
        # slots mixes them: a Gather and a ReduceSum instead of a scatter-add.
        routed = torch.cat(outputs, dim=0) * sorted_weights[:, None]
        inverse = torch.argsort(order)
        output = routed.index_select(0, inverse).view(-1, self.top_k, self.hidden_size).sum(dim=1)
        return output, counts.to(x.dtype), dropped


class StepLayer(nn.Module):
    def __init__(self, layer, options: StepGraphOptions):
        super().__init__()
        self.input_norm = StepNorm(layer.input_norm)
        self.attention = StepAttention(layer.attention)
        self.post_attention_norm = StepNorm(layer.post_attention_norm)
        moe_class = {"dense": DenseStepMoe, "grouped": GroupedStepMoe, "sparse": SparseStepMoe}[options.moe_dispatch]
        self.moe = moe_class(layer.moe, options.expert_capacity)

    def forward(self, x, batch, seq, cos, sin, rotation, bias, past_key, past_value, past_length):
        attended, new_key, new_value, last_query = self.attention(
            self.input_norm(x), batch, seq, cos, sin, rotation, bias, past_key, past_value, past_length
        )
        x = x + attended
        moe_output, counts, dropped = self.moe(self.post_attention_norm(x))
        return x + moe_output, new_key, new_value, last_query, counts, dropped


class StepDecoder(nn.Module):
    """The step graph as a torch module over a trained MoeForCausalLM's weights.

    forward(input_ids, position_ids, attention_bias, past_key.0, past_value.0,
    ...) returns the outputs in io_names order: logits, new_key.0, new_value.0,
    ..., last_query.0, ..., expert_counts and, with a capacity, expert_dropped.
    The residual stream is kept as [batch * seq, hidden], so the norms and the
    MoE need no reshapes, and batch and seq are read from input_ids once.
    """

    def __init__(self, model: MoeForCausalLM, options: StepGraphOptions = StepGraphOptions()):
        super().__init__()
        if options.moe_dispatch not in MOE_DISPATCHES:
            raise ValueError(f"moe_dispatch must be one of {MOE_DISPATCHES}, got {options.moe_dispatch!r}")
        if options.expert_capacity < 0:
            raise ValueError(f"expert_capacity must be 0 (no limit) or more, got {options.expert_capacity}")
        config = model.config
        self.config = config
        self.options = options
        self.group_size = config.num_attention_heads // config.num_key_value_heads
        # The buffers are copies of the weights, detached from autograd.
        with torch.no_grad():
            self.register_buffer("embed_weight", model.embed_tokens.weight.clone())
            lm_head = model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight
            self.register_buffer("lm_head_weight", lm_head.t().contiguous())
            self.register_buffer("rotation", rotate_half_matrix(config.head_dim))
            self.rotary = StepRotary(model)
            self.layers = nn.ModuleList(StepLayer(layer, options) for layer in model.layers)
            self.norm = StepNorm(model.norm)

    def forward(self, input_ids, position_ids, attention_bias, *past_flat):
        batch, seq = input_ids.shape[0], input_ids.shape[1]
        past_length = past_flat[0].shape[2]
        cos, sin = self.rotary(position_ids)
        # [batch, 1, 1, seq, past + seq], broadcast over the KV heads and the group.
        bias = attention_bias.clamp(min=MASK_FLOOR)[:, None, None]
        x = F.embedding(input_ids.reshape(-1), self.embed_weight)

        new_keys_values: List[torch.Tensor] = []
        last_queries: List[torch.Tensor] = []
        counts: List[torch.Tensor] = []
        dropped: List[Optional[torch.Tensor]] = []
        for index, layer in enumerate(self.layers):
            past_key, past_value = past_flat[2 * index], past_flat[2 * index + 1]
            x, new_key, new_value, last_query, layer_counts, layer_dropped = layer(
                x, batch, seq, cos, sin, self.rotation, bias, past_key, past_value, past_length
            )
            new_keys_values += [new_key, new_value]
            last_queries.append(last_query)
            counts.append(layer_counts)
            dropped.append(layer_dropped)

        last_hidden = x.view(batch, seq, -1)[:, -1]
        logits = torch.matmul(self.norm(last_hidden), self.lm_head_weight)
        outputs = [logits, *new_keys_values, *last_queries, torch.stack(counts)]
        if self.options.expert_capacity:
            outputs.append(torch.stack(dropped))
        return tuple(outputs)
