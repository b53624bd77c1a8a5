"""Write a synthetic copy-task corpus in the trainer's JSONL format, for smoke tests.

Each sequence is [bos] + prompt + [sep] + prompt + [eos] with a random prompt,
and loss_from points at the first copied token. A model that learns to copy
drives the loss toward 0, while a uniform guess costs ln(vocab_size).
Ids 0-3 are pad, bos, sep and eos.

    /usr/bin/python3 training/trainer/synthetic_corpus.py --out-dir /tmp/copy --vocab-size 300
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import List

PAD_ID, BOS_ID, SEP_ID, EOS_ID = 0, 1, 2, 3
FIRST_TOKEN_ID = 4


def copy_example(rng: random.Random, vocab_size: int, min_prompt: int, max_prompt: int) -> dict:
    prompt = [rng.randrange(FIRST_TOKEN_ID, vocab_size) for _ in range(rng.randint(min_prompt, max_prompt))]
    ids = [BOS_ID, *prompt, SEP_ID, *prompt, EOS_ID]
    return {"ids": ids, "loss_from": len(prompt) + 2}


def write_split(path: Path, count: int, rng: random.Random, args: argparse.Namespace) -> None:
    with path.open("w") as out:
        for _ in range(count):
            out.write(json.dumps(copy_example(rng, args.vocab_size, args.min_prompt, args.max_prompt)) + "\n")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True, help="writes train.jsonl and heldout.jsonl here")
    parser.add_argument("--vocab-size", type=int, default=300, help="default 300")
    parser.add_argument("--train-count", type=int, default=4000, help="training sequences (default 4000)")
    parser.add_argument("--valid-count", type=int, default=200, help="held-out sequences (default 200)")
    parser.add_argument("--min-prompt", type=int, default=4, help="min prompt tokens (default 4)")
    parser.add_argument("--max-prompt", type=int, default=24, help="max prompt tokens (default 24)")
    parser.add_argument("--seed", type=int, default=7, help="default 7")
    args = parser.parse_args(argv)

    if args.vocab_size <= FIRST_TOKEN_ID:
        parser.error(f"--vocab-size must exceed {FIRST_TOKEN_ID}, got {args.vocab_size}")
    if not 1 <= args.min_prompt <= args.max_prompt:
        parser.error(f"need 1 <= --min-prompt <= --max-prompt, got {args.min_prompt} and {args.max_prompt}")

    rng = random.Random(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_split(args.out_dir / "train.jsonl", args.train_count, rng, args)
    write_split(args.out_dir / "heldout.jsonl", args.valid_count, rng, args)
    print(f"wrote {args.train_count} train and {args.valid_count} held-out sequences to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
