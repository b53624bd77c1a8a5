"""Decoder-only mixture-of-experts transformer for Sanfang's default model.

Plain torch 1.13 (no scaled_dot_product_attention), written so that
torch.onnx.export traces it into the Optimum decoder layout: the graph takes
input_ids, attention_mask, position_ids and the past key/value tensors, and
returns logits and the present key/value tensors.

Experts are SwiGLU MLPs with the gate and up projections fused into one
matrix, so each expert costs two MatMul nodes in the exported graph.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

KeyValue = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class MoeConfig:
    """Model hyperparameters, stored in the checkpoint and in config.json."""

    vocab_size: int = 0
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    num_local_experts: int = 4
    num_experts_per_tok: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    router_aux_loss_coef: float = 0.01
    initializer_range: float = 0.02
    # Zero-computation experts (LongCat-Flash): the router gets this many extra
    # logits after the num_local_experts real ones, and a token routed to one
    # of them adds weight * x (the identity) with no computation.
    num_zero_experts: int = 0
    # Maximum (token, choice) assignments that each real expert takes per
    # forward call. Later assignments in token order (batch-major, padding
    # positions included) are dropped and add nothing. Zero experts have no
    # limit. 0 means no limit.
    expert_capacity: int = 0

    def validate(self) -> None:
        """Raise ValueError when the sizes do not fit together."""
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple "
                f"of num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.num_zero_experts < 0:
            raise ValueError(f"num_zero_experts must be 0 or more, got {self.num_zero_experts}")
        if self.expert_capacity < 0:
            raise ValueError(f"expert_capacity must be 0 (no limit) or more, got {self.expert_capacity}")
        routes = self.num_local_experts + self.num_zero_experts
        if not 1 <= self.num_experts_per_tok <= routes:
            raise ValueError(
                f"num_experts_per_tok must be between 1 and num_local_experts + num_zero_experts "
                f"({routes}), got {self.num_experts_per_tok}"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> "MoeConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one --option per MoeConfig field (except vocab_size) with the field's default."""
    group = parser.add_argument_group("model")
    for field in dataclasses.fields(MoeConfig):
        if field.name == "vocab_size":
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type in (bool, "bool"):
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            kind = float if field.type in (float, "float") else int
            group.add_argument(flag, dest=field.name, type=kind, default=field.default, help=f"default {field.default}")


def config_from_arguments(args: argparse.Namespace, vocab_size: int) -> MoeConfig:
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(MoeConfig) if field.name != "vocab_size"}
    config = MoeConfig(vocab_size=vocab_size, **values)
    config.validate()
    return config


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(variance + self.eps) * self.weight


class RotaryEmbedding(nn.Module):
    """Cos/sin tables computed from position_ids, so the graph takes positions as input."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids.to(torch.float32)[:, :, None] * self.inv_freq[None, None, :]
        angles = torch.cat([freqs, freqs], dim=-1)
        # [batch, 1, seq, head_dim] broadcasts over the head axis.
        return angles.cos()[:, None], angles.sin()[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """Grouped-query attention with the KV cache concatenated inside the graph.

    NOTE: the concat copies the whole cache on every decode step, so the cost
    of a step grows with the context length even at batch 1.
    """

    def __init__(self, config: MoeConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.group_size = self.num_heads // self.num_kv_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        allowed: torch.Tensor,
        past: Optional[KeyValue],
    ) -> Tuple[torch.Tensor, KeyValue]:
        batch, seq = x.shape[0], x.shape[1]
        q = self.q_proj(x).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        # Scaling q instead of the scores touches head_dim values per query
        # rather than one per visible key.
        q = apply_rotary(q, cos, sin) * self.scale
        k = apply_rotary(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)

        # Query head h reads KV head h // group_size. Folding the group into the
        # query rows lets one plain MatMul per KV head serve the whole group,
        # without copying K and V group_size times.
        total = k.shape[2]
        q = q.reshape(batch, self.num_kv_heads, self.group_size * seq, self.head_dim)
        scores = torch.matmul(q, k.transpose(2, 3))
        scores = scores.view(batch, self.num_kv_heads, self.group_size, seq, total)
        # A finite minimum (not -inf) keeps rows with no visible key, such as
        # left-padding queries, free of NaN, because they softmax to a uniform average.
        scores = torch.where(allowed, scores, torch.tensor(torch.finfo(torch.float32).min, dtype=scores.dtype))
        weights = torch.softmax(scores, dim=-1).view(batch, self.num_kv_heads, self.group_size * seq, total)
        context = torch.matmul(weights, v).view(batch, self.num_heads, seq, self.head_dim)
        context = context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)
        return self.o_proj(context), (k, v)


class SwiGLUExpert(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.intermediate_size = intermediate_size
        self.gate_up_proj = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        gate = gate_up[:, : self.intermediate_size]
        up = gate_up[:, self.intermediate_size :]
        return self.down_proj(F.silu(gate) * up)


class MoeOutput(NamedTuple):
    hidden: torch.Tensor
    aux_loss: Optional[torch.Tensor]
    expert_counts: Optional[torch.Tensor]


class SparseMoe(nn.Module):
    """Top-k routed experts with sparse, traceable dispatch.

    The Python loop over experts is static, so tracing keeps every expert in
    the graph whether or not the example input reaches it. Each expert takes
    its tokens with NonZero + index_select and adds its output back with
    scatter_add, which exports as ScatterElements(reduction="add") from opset
    16. An expert that receives no tokens runs on an empty [0, hidden] batch.

    With config.num_zero_experts Z > 0, the router scores E + Z routes and the
    last Z are identity experts. With config.expert_capacity C > 0, each real
    expert keeps only its first C slots of the call in token order.
    """

    def __init__(self, config: MoeConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.num_experts = config.num_local_experts
        self.num_zero_experts = config.num_zero_experts
        self.num_routes = config.num_local_experts + config.num_zero_experts
        self.capacity = config.expert_capacity
        self.top_k = config.num_experts_per_tok
        self.router = nn.Linear(config.hidden_size, self.num_routes, bias=False)
        self.experts = nn.ModuleList(
            SwiGLUExpert(config.hidden_size, config.intermediate_size) for _ in range(self.num_experts)
        )

    def forward(self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None, with_stats: bool = False) -> MoeOutput:
        flat = x.reshape(-1, self.hidden_size)
        probs = torch.softmax(self.router(flat), dim=-1)
        top_weights, top_experts = probs.topk(self.top_k, dim=-1)
        top_weights = top_weights / top_weights.sum(dim=-1, keepdim=True)
        slot_weights = top_weights.reshape(-1)
        slot_experts = top_experts.reshape(-1)

        output = torch.zeros_like(flat)
        for index, expert in enumerate(self.experts):
            # Slot s is choice s % top_k of token s // top_k. Slots are never
            # negative, so truncating division equals floor division and exports
            # as a single Div.
            slots = torch.nonzero(slot_experts == index)[:, 0]
            if self.capacity:
                # nonzero lists slots in ascending order, which is token order.
                slots = slots[: self.capacity]
            tokens = torch.div(slots, self.top_k, rounding_mode="trunc")
            routed = expert(flat.index_select(0, tokens)) * slot_weights.index_select(0, slots)[:, None]
            output = output.scatter_add(0, tokens[:, None].expand(-1, self.hidden_size), routed)
        if self.num_zero_experts:
            zero_weight = top_weights.masked_fill(top_experts < self.num_experts, 0.0).sum(dim=-1, keepdim=True)
            output = output + zero_weight * flat
        output = output.view_as(x)

        if not with_stats:
            return MoeOutput(output, None, None)

        # Switch Transformer balance loss: num_routes * sum_e(f_e * P_e), where
        # f_e is the share of routed slots and P_e the mean router probability.
        # Zero experts count as routes, and the counts include slots that the
        # capacity dropped.
        assignments = F.one_hot(top_experts, self.num_routes).sum(dim=1).to(flat.dtype)
        if token_mask is None:
            weights = torch.ones(flat.shape[0], 1, dtype=flat.dtype, device=flat.device)
        else:
            weights = token_mask.reshape(-1, 1).to(flat.dtype)
        token_count = weights.sum().clamp(min=1.0)
        expert_counts = (assignments * weights).sum(dim=0)
        slot_share = expert_counts / (token_count * self.top_k)
        mean_prob = (probs * weights).sum(dim=0) / token_count
        aux_loss = self.num_routes * (slot_share * mean_prob).sum()
        return MoeOutput(output, aux_loss, expert_counts.detach())


class DecoderLayer(nn.Module):
    def __init__(self, config: MoeConfig):
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = Attention(config)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.moe = SparseMoe(config)

    def forward(self, x, cos, sin, allowed, past, token_mask, with_stats):
        attended, present = self.attention(self.input_norm(x), cos, sin, allowed, past)
        x = x + attended
        moe = self.moe(self.post_attention_norm(x), token_mask, with_stats)
        return x + moe.hidden, present, moe


class DecoderOutput(NamedTuple):
    hidden: torch.Tensor
    presents: List[KeyValue]
    aux_loss: Optional[torch.Tensor]
    expert_counts: Optional[torch.Tensor]


class MoeForCausalLM(nn.Module):
    def __init__(self, config: MoeConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2 scaling: residual-branch outputs shrink with depth so the
        # residual stream keeps its variance at initialisation.
        residual_std = config.initializer_range / math.sqrt(2 * config.num_hidden_layers)
        for name, parameter in self.named_parameters():
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=residual_std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Optional[List[KeyValue]] = None,
        with_stats: bool = False,
    ) -> DecoderOutput:
        """Run the layers and return the final normed hidden states and the presents.

        attention_mask is [batch, past + seq] with 1 on real tokens and 0 on
        padding. The query at cache index past + j attends to key k when
        k <= past + j and attention_mask[b, k] == 1, which covers left padding.
        With with_stats, also returns the mean balance loss over layers and the
        per-layer expert token counts [layers, experts + zero experts] over
        unmasked tokens.
        """
        seq = input_ids.shape[1]
        past_length = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        key_index = torch.arange(attention_mask.shape[1], device=input_ids.device)
        query_index = torch.arange(seq, device=input_ids.device) + past_length
        causal = key_index[None, :] <= query_index[:, None]
        allowed = causal[None, :, :] & (attention_mask[:, None, :] == 1)
        # [batch, 1, 1, seq, total] broadcasts over KV heads and the query group.
        allowed = allowed[:, None, None]
        token_mask = attention_mask[:, -seq:] if with_stats else None

        cos, sin = self.rotary(position_ids)
        x = self.embed_tokens(input_ids)
        presents: List[KeyValue] = []
        aux_losses = []
        counts = []
        for index, layer in enumerate(self.layers):
            past = None if past_key_values is None else past_key_values[index]
            x, present, moe = layer(x, cos, sin, allowed, past, token_mask, with_stats)
            presents.append(present)
            if with_stats:
                aux_losses.append(moe.aux_loss)
                counts.append(moe.expert_counts)

        hidden = self.norm(x)
        if not with_stats:
            return DecoderOutput(hidden, presents, None, None)
        return DecoderOutput(hidden, presents, torch.stack(aux_losses).mean(), torch.stack(counts))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is not None:
            return self.lm_head(hidden)
        return torch.matmul(hidden, self.embed_tokens.weight.t())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Optional[List[KeyValue]] = None,
    ) -> Tuple[torch.Tensor, List[KeyValue]]:
        output = self.decode(input_ids, attention_mask, position_ids, past_key_values)
        return self.logits(output.hidden), output.presents


def left_padded_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Number real tokens 0, 1, ... from the first one and give padding position 0."""
    positions = attention_mask.long().cumsum(dim=-1) - 1
    return positions.clamp(min=0)
