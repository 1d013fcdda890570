#!/usr/bin/env python3
"""Writes a randomly initialised Pythia-shaped GPT-NeoX checkpoint (config.json,
model.safetensors in fp16, tokenizer.json) for benchmarks where no real weights can be
downloaded. Its text is noise and its perplexities are those of random weights.

    random_pythia_checkpoint.py OUT_DIR [--size 160m] [--device cpu]
                                [--tokenizer FILE]

--tokenizer defaults to tokenizer/tokenizer.json of $SINKSERVE_DATA_DIR, else of the repo's
data/ (scripts/fetch-data.sh).

--device cuda draws the weights on the GPU (seconds for 2.8b, against minutes on a CPU).
--device numpy needs no torch: numpy draws every tensor, biases and norm parameters included
(so that a layout check such as deploy/bench/vs-llamacpp.sh's covers them too), and writes
config.json itself. --hidden-act sets the MLP activation (Pythia's is "gelu", exact erf).

Needs torch, transformers, safetensors (e.g. the fixture venv: /work/.venv-fixtures); with
--device numpy only numpy and safetensors.
"""
import argparse
import json
import os
import shutil

# layers, hidden, heads (docs/numerics.md); FFN = 4 * hidden, vocab 50304, rotary 25%.
SIZES = {"70m": (6, 512, 8), "160m": (12, 768, 12), "410m": (24, 1024, 16),
         "2.8b": (32, 2560, 32)}


def write_with_torch(config, out, seed, device):
    """HF's own initialisation (normal(0, 0.02) matrices, zero biases, unit norms)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    torch.manual_seed(seed)
    with torch.device(device):
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**config)).to(torch.float16)
    model.save_pretrained(out, safe_serialization=True)


def write_with_numpy(config, out, seed):
    """HF's tensor names and shapes; matrices and biases normal(0, 0.02), norm weights
    1 + normal(0, 0.02), norm biases normal(0, 0.02); fp16."""
    import numpy as np
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)

    def normal(*shape, mean=0.0):
        return (mean + 0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)

    hidden, ffn, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    tensors = {"gpt_neox.embed_in.weight": normal(vocab, hidden)}
    shapes = {"attention.query_key_value": (3 * hidden, hidden),
              "attention.dense": (hidden, hidden),
              "mlp.dense_h_to_4h": (ffn, hidden), "mlp.dense_4h_to_h": (hidden, ffn)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"gpt_neox.layers.{layer}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[prefix + norm + ".weight"] = normal(hidden, mean=1.0)
            tensors[prefix + norm + ".bias"] = normal(hidden)
        for name, shape in shapes.items():
            tensors[prefix + name + ".weight"] = normal(*shape)
            tensors[prefix + name + ".bias"] = normal(shape[0])
    tensors["gpt_neox.final_layer_norm.weight"] = normal(hidden, mean=1.0)
    tensors["gpt_neox.final_layer_norm.bias"] = normal(hidden)
    tensors["embed_out.weight"] = normal(vocab, hidden)
    os.makedirs(out, exist_ok=True)
    save_file(tensors, f"{out}/model.safetensors", metadata={"format": "pt"})
    with open(f"{out}/config.json", "w", encoding="utf-8") as f:
        json.dump(dict(config, architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox",
                       layer_norm_eps=1e-5, torch_dtype="float16"), f, indent=2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--size", default="160m", choices=sorted(SIZES))
    data_dir = os.environ.get("SINKSERVE_DATA_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "data")
    parser.add_argument("--tokenizer", default=os.path.join(data_dir, "tokenizer", "tokenizer.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu",
                        help="where to draw the weights (cpu, cuda: torch; numpy: no torch)")
    parser.add_argument("--hidden-act", default="gelu", help="MLP activation in config.json")
    args = parser.parse_args()
    if not os.path.isfile(args.tokenizer):
        parser.error(f"{args.tokenizer} not found: run scripts/fetch-data.sh, or set "
                     "SINKSERVE_DATA_DIR or --tokenizer")
    layers, hidden, heads = SIZES[args.size]
    config = dict(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=4 * hidden, rotary_pct=0.25,
                  rotary_emb_base=10000, max_position_embeddings=2048,
                  use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0,
                  eos_token_id=0, hidden_act=args.hidden_act)
    if args.device == "numpy":
        write_with_numpy(config, args.out, args.seed)
    else:
        write_with_torch(config, args.out, args.seed, args.device)
    shutil.copy(args.tokenizer, f"{args.out}/tokenizer.json")
    print(f"wrote a random Pythia-{args.size}-shaped checkpoint to {args.out}")


if __name__ == "__main__":
    main()
