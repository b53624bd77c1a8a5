"""Train the MoE decoder on a tokenised corpus.

Each line of --train and --valid is {"ids": [int, ...], "loss_from": int}: the
loss covers the predictions of ids[t] for t >= loss_from, and the sequence
already ends with the end token. Batches group sequences of similar length,
padded on the right.

    /usr/bin/python3 training/trainer/train.py --vocab-size 4000 --pad-id 0 --minutes 30

Stops at the first limit reached among --epochs, --max-steps and --minutes.
With --minutes, the cosine schedule follows the wall clock, so the number of
steps (and the result) depends on the machine's speed. Runs that stop on
--epochs or --max-steps alone are repeatable for a given seed and thread count.
"""

from __future__ import annotations

import os

# GNU OpenMP threads spin for a while after each parallel region and then
# compete with OpenBLAS's own threads for the same cores. Passive waiting
# raised the speed of a training step of the default config (batch 32 x 200
# tokens) from about 1,900 to 3,300 tokens/s on a 2-core VM with Debian's
# torch 1.13 and OpenBLAS pthreads. libgomp reads this when torch loads it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F

from model import MoeConfig, MoeForCausalLM, add_config_arguments, config_from_arguments

IGNORE_INDEX = -100


class Example(NamedTuple):
    ids: List[int]
    loss_from: int


class Batch(NamedTuple):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    real_tokens: int


def read_examples(path: Path, vocab_size: int, max_length: int) -> List[Example]:
    """Read and validate a JSONL corpus, truncating sequences longer than max_length tokens.

    Raises ValueError, naming the file and line, on malformed lines and on ids
    outside [0, vocab_size). Skips sequences that have no target left.
    """
    examples: List[Example] = []
    truncated = 0
    without_targets = 0
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                ids = record["ids"]
                loss_from = int(record["loss_from"])
                if not isinstance(ids, list):
                    raise TypeError(f"ids is {type(ids).__name__}, not a list")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f'{path}:{number}: expected {{"ids": [...], "loss_from": int}}: {error}') from error
            invalid = [token for token in ids if not (isinstance(token, int) and 0 <= token < vocab_size)]
            if invalid:
                raise ValueError(f"{path}:{number}: id {invalid[0]!r} is outside [0, {vocab_size}); check --vocab-size")
            if len(ids) > max_length:
                ids = ids[:max_length]
                truncated += 1
            # ids[0] has no preceding token to predict it from.
            loss_from = max(loss_from, 1)
            if loss_from >= len(ids):
                without_targets += 1
                continue
            examples.append(Example(ids, loss_from))

    if truncated:
        print(f"{path}: truncated {truncated} sequences to {max_length} tokens", flush=True)
    if without_targets:
        print(f"{path}: skipped {without_targets} sequences with no target token", flush=True)
    if not examples:
        raise ValueError(f"{path}: no usable sequences")
    return examples


def plan_batches(
    lengths: List[int], batch_size: int, max_batch_tokens: int, rng: Optional[random.Random], pool_batches: int = 50
) -> List[List[int]]:
    """Group example indices into batches of similar length.

    With an rng, the indices are shuffled, sorted by length within pools of
    pool_batches * batch_size, and the batches shuffled, so batches differ
    between epochs while padding stays low. Without one, the whole set is
    sorted (for validation). A batch contains at most batch_size sequences and
    at most max_batch_tokens padded tokens, except that a single sequence
    longer than that still gets a batch of its own.
    """
    order = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(order)
        pool_size = batch_size * pool_batches
    else:
        pool_size = len(order)

    batches: List[List[int]] = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lambda index: lengths[index])
        batch: List[int] = []
        width = 0
        for index in pool:
            grown_width = max(width, lengths[index])
            if batch and (len(batch) == batch_size or grown_width * (len(batch) + 1) > max_batch_tokens):
                batches.append(batch)
                batch = []
                grown_width = lengths[index]
            batch.append(index)
            width = grown_width
        if batch:
            batches.append(batch)

    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(examples: List[Example], pad_id: int) -> Batch:
    """Right-pad the inputs ids[:-1] and label position t with ids[t + 1] when t + 1 >= loss_from."""
    width = max(len(example.ids) - 1 for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    real_tokens = 0
    for row, example in enumerate(examples):
        length = len(example.ids) - 1
        ids = torch.tensor(example.ids, dtype=torch.long)
        input_ids[row, :length] = ids[:-1]
        attention_mask[row, :length] = 1
        labels[row, example.loss_from - 1 : length] = ids[example.loss_from :]
        real_tokens += length
    position_ids = torch.arange(width).unsqueeze(0).expand(len(examples), -1)
    return Batch(input_ids, attention_mask, position_ids, labels, real_tokens)


def batch_loss(model: MoeForCausalLM, batch: Batch, with_stats: bool):
    """Return (summed target cross-entropy, target count, aux loss, expert counts).

    The LM head runs only on positions that have a target, which skips the
    vocabulary projection for prompt tokens.
    """
    output = model.decode(batch.input_ids, batch.attention_mask, batch.position_ids, with_stats=with_stats)
    targets = batch.labels != IGNORE_INDEX
    logits = model.logits(output.hidden[targets])
    loss_sum = F.cross_entropy(logits, batch.labels[targets], reduction="sum")
    return loss_sum, int(targets.sum()), output.aux_loss, output.expert_counts


@torch.no_grad()
def evaluate(model: MoeForCausalLM, examples: List[Example], batches: List[List[int]], pad_id: int) -> float:
    """Return the mean cross-entropy per target token (no aux loss)."""
    model.eval()
    total_loss = 0.0
    total_targets = 0
    for indices in batches:
        loss_sum, targets, _, _ = batch_loss(model, collate([examples[i] for i in indices], pad_id), with_stats=False)
        total_loss += float(loss_sum)
        total_targets += targets
    model.train()
    return total_loss / max(total_targets, 1)


def learning_rate(step: int, progress: float, args: argparse.Namespace) -> float:
    """Linear warmup over --warmup-steps, then cosine decay to lr * min_lr_ratio at progress 1."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return args.lr * (args.min_lr_ratio + (1.0 - args.min_lr_ratio) * cosine)


def make_optimizer(model: MoeForCausalLM, args: argparse.Namespace) -> torch.optim.AdamW:
    # Weight decay applies to matrices and embeddings, not to norm gains.
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    not_decayed = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decayed, "weight_decay": args.weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def save_checkpoint(model: MoeForCausalLM, out_dir: Path, args: argparse.Namespace, state: dict) -> Path:
    """Write model.pt (weights, config, run state) and config.json, replacing earlier ones atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "config": dataclasses.asdict(model.config),
        "model": model.state_dict(),
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        **state,
    }
    path = out_dir / "model.pt"
    temporary = out_dir / "model.pt.tmp"
    torch.save(checkpoint, temporary)
    os.replace(temporary, path)
    (out_dir / "config.json").write_text(model.config.to_json())
    return path


def format_expert_share(counts: torch.Tensor) -> str:
    """Format the per-layer share of routed slots, e.g. 'L0 25/24/26/25'."""
    shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    layers = ["L{} {}".format(i, "/".join(f"{100 * share:.0f}" for share in row.tolist())) for i, row in enumerate(shares)]
    return " ".join(layers)


def parse_arguments(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=Path("training/out/corpus/train.jsonl"), help="training JSONL")
    parser.add_argument("--valid", type=Path, default=Path("training/out/corpus/heldout.jsonl"), help="validation JSONL")
    parser.add_argument("--vocab-size", type=int, required=True, help="tokenizer vocabulary size")
    parser.add_argument("--pad-id", type=int, required=True, help="id written into padding positions")
    parser.add_argument("--out-dir", type=Path, default=Path("training/out/ckpt"), help="where model.pt and config.json go")
    parser.add_argument("--epochs", type=float, default=None, help="stop after this many passes over --train (may be fractional)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the training loop in minutes")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32, help="max sequences per batch (default 32)")
    parser.add_argument("--max-batch-tokens", type=int, default=8192, help="max padded tokens per batch (default 8192)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of --lr (default 0.1)")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear warmup steps (default 100)")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices (default 0.1)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm (default 1.0)")
    parser.add_argument("--log-every", type=int, default=20, help="steps between training log lines (default 20)")
    parser.add_argument("--eval-every", type=int, default=200, help="steps between validation runs and checkpoint saves (default 200)")
    parser.add_argument("--valid-limit", type=int, default=1000, help="validate on the first N valid sequences (default 1000, 0 for all)")
    parser.add_argument("--seed", type=int, default=1234, help="seed for weights and batch order (default 1234)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)

    if args.epochs is None and args.minutes is None and args.max_steps is None:
        parser.error("set at least one of --epochs, --minutes, --max-steps")
    if not 0 <= args.pad_id < args.vocab_size:
        parser.error(f"--pad-id {args.pad_id} is outside [0, {args.vocab_size})")
    return args


def main(argv: List[str]) -> int:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    batch_rng = random.Random(args.seed)

    config: MoeConfig = config_from_arguments(args, args.vocab_size)
    # The inputs drop the final token, so a sequence of max_position_embeddings + 1 ids still fits.
    max_length = config.max_position_embeddings + 1
    train_examples = read_examples(args.train, config.vocab_size, max_length)
    valid_examples = read_examples(args.valid, config.vocab_size, max_length)
    if args.valid_limit > 0 and len(valid_examples) > args.valid_limit:
        print(f"validating on the first {args.valid_limit} of {len(valid_examples)} valid sequences", flush=True)
        valid_examples = valid_examples[: args.valid_limit]
    train_lengths = [len(example.ids) - 1 for example in train_examples]
    valid_batches = plan_batches([len(e.ids) - 1 for e in valid_examples], args.batch_size, args.max_batch_tokens, None)

    model = MoeForCausalLM(config)
    model.train()
    optimizer = make_optimizer(model, args)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"config {json.dumps(dataclasses.asdict(config))}", flush=True)
    print(
        f"{parameters / 1e6:.2f}M parameters, {len(train_examples)} train / {len(valid_examples)} valid sequences, "
        f"{sum(train_lengths)} train input tokens",
        flush=True,
    )

    started = time.time()
    step = 0
    epoch = 0
    epoch_position = 0.0
    tokens_seen = 0
    valid_loss = float("nan")
    interval = {"loss": 0.0, "targets": 0, "aux": 0.0, "steps": 0, "tokens": 0, "start": time.time()}
    interval_counts = torch.zeros(config.num_hidden_layers, config.num_local_experts + config.num_zero_experts)
    finished = False

    def progress() -> float:
        fractions = [0.0]
        if args.max_steps:
            fractions.append(step / args.max_steps)
        if args.minutes:
            fractions.append((time.time() - started) / (args.minutes * 60))
        if args.epochs:
            fractions.append(epoch_position / args.epochs)
        return max(fractions)

    while not finished:
        batches = plan_batches(train_lengths, args.batch_size, args.max_batch_tokens, batch_rng)
        if epoch == 0:
            padded = sum(len(b) * max(train_lengths[i] for i in b) for b in batches)
            print(f"{len(batches)} batches per epoch, {100 * (1 - sum(train_lengths) / padded):.1f}% padding", flush=True)
        for batch_index, indices in enumerate(batches):
            epoch_position = epoch + batch_index / len(batches)
            if progress() >= 1.0:
                finished = True
                break

            lr = learning_rate(step, progress(), args)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = collate([train_examples[i] for i in indices], args.pad_id)
            loss_sum, targets, aux_loss, expert_counts = batch_loss(model, batch, with_stats=True)
            loss = loss_sum / max(targets, 1) + config.router_aux_loss_coef * aux_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            step += 1
            tokens_seen += batch.real_tokens

            interval["loss"] += float(loss_sum)
            interval["targets"] += targets
            interval["aux"] += float(aux_loss)
            interval["steps"] += 1
            interval["tokens"] += batch.real_tokens
            interval_counts += expert_counts

            if step % args.log_every == 0:
                seconds = time.time() - interval["start"]
                print(
                    f"step {step} | epoch {epoch_position:.2f} | loss {interval['loss'] / max(interval['targets'], 1):.4f} "
                    f"| aux {interval['aux'] / interval['steps']:.3f} | lr {lr:.2e} | grad {float(grad_norm):.2f} "
                    f"| {interval['tokens'] / seconds:.0f} tokens/s | {time.time() - started:.0f}s",
                    flush=True,
                )
                interval.update(loss=0.0, targets=0, aux=0.0, steps=0, tokens=0, start=time.time())

            if step % args.eval_every == 0:
                valid_loss = evaluate(model, valid_examples, valid_batches, args.pad_id)
                print(f"step {step} | valid loss {valid_loss:.4f} | experts {format_expert_share(interval_counts)}", flush=True)
                interval_counts.zero_()
                save_checkpoint(model, args.out_dir, args, {"step": step, "tokens_seen": tokens_seen, "valid_loss": valid_loss})
                # Validation time does not count toward the tokens/s of the next log line.
                interval["start"] = time.time()
        else:
            epoch += 1
            epoch_position = float(epoch)
            if args.epochs and epoch >= args.epochs:
                finished = True

    valid_loss = evaluate(model, valid_examples, valid_batches, args.pad_id)
    elapsed = time.time() - started
    path = save_checkpoint(model, args.out_dir, args, {"step": step, "tokens_seen": tokens_seen, "valid_loss": valid_loss})
    print(
        f"done: {step} steps, {tokens_seen} tokens in {elapsed:.0f}s ({tokens_seen / elapsed:.0f} tokens/s overall), "
        f"valid loss {valid_loss:.4f} (uniform {math.log(config.vocab_size):.4f}), saved {path}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
