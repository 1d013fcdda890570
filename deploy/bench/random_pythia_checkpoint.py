#!/usr/bin/env python3
"""Writes a randomly initialised Pythia-shaped GPT-NeoX checkpoint (config.json,
model.safetensors in fp16, tokenizer.json) for benchmarks where no real weights can be
downloaded. Its text is noise and its perplexities are those of random weights.

    random_pythia_checkpoint.py OUT_DIR [--size 160m] [--device cpu]
                                [--tokenizer FILE]

--tokenizer defaults to tokenizer/tokenizer.json of $SINKSERVE_DATA_DIR, else of the repo's
data/ (scripts/fetch-data.sh).

--device cuda draws the weights on the GPU (seconds for 2.8b, against minutes on a CPU).

Needs torch, transformers, safetensors (e.g. the fixture venv: /work/.venv-fixtures).
"""
import argparse
import os
import shutil

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

# layers, hidden, heads (DESIGN.md §2); FFN = 4 * hidden, vocab 50304, rotary 25%.
SIZES = {"70m": (6, 512, 8), "160m": (12, 768, 12), "410m": (24, 1024, 16),
         "2.8b": (32, 2560, 32)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--size", default="160m", choices=sorted(SIZES))
    data_dir = os.environ.get("SINKSERVE_DATA_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "data")
    parser.add_argument("--tokenizer", default=os.path.join(data_dir, "tokenizer", "tokenizer.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where to draw the weights (cpu, cuda)")
    args = parser.parse_args()
    if not os.path.isfile(args.tokenizer):
        parser.error(f"{args.tokenizer} not found: run scripts/fetch-data.sh, or set "
                     "SINKSERVE_DATA_DIR or --tokenizer")
    layers, hidden, heads = SIZES[args.size]
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=4 * hidden,
                           rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=2048,
                           use_parallel_residual=True, tie_word_embeddings=False,
                           bos_token_id=0, eos_token_id=0)
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = GPTNeoXForCausalLM(config).to(torch.float16)
    model.save_pretrained(args.out, safe_serialization=True)
    shutil.copy(args.tokenizer, f"{args.out}/tokenizer.json")
    print(f"wrote a random Pythia-{args.size}-shaped checkpoint to {args.out}")


if __name__ == "__main__":
    main()
