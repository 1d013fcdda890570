#!/usr/bin/env python3
"""Converts a Hugging Face GPT-NeoX (Pythia) checkpoint directory (config.json,
model.safetensors, tokenizer.json) into a GGUF file that llama.cpp loads as architecture
`gptneox`, with f16 or f32 matrices (1-D tensors stay f32), for the side-by-side benchmark
deploy/bench/vs-llamacpp.sh. Quantized files come from llama.cpp's own llama-quantize.

    pythia_gguf.py CHECKPOINT_DIR OUT.gguf [--outtype f16|f32]

Needs numpy and safetensors (the benchmark's venv).

Layout: HF's attention.query_key_value rows are per head [q, k, v] (head h's q rows, then its
k rows, then its v rows); llama.cpp's attn_qkv is all heads' q rows, then all k, then all v,
so the rows (and the bias) are regrouped here. Every other tensor is copied as it is; GGUF
lists dimensions innermost first, so a [out, in] matrix appears as {in, out}.
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import load_file

from gguf_file import GgufWriter

ARCH = "gptneox"
# llama.cpp's token types.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

# HF name (after "gpt_neox.layers.N.") -> llama.cpp name (after "blk.N.").
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "attention.query_key_value": "attn_qkv",
    "attention.dense": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.dense_h_to_4h": "ffn_up",
    "mlp.dense_4h_to_h": "ffn_down",
}
TOP_NAMES = {
    "gpt_neox.embed_in": "token_embd",
    "gpt_neox.final_layer_norm": "output_norm",
    "embed_out": "output",
}


def gguf_name(hf_name):
    """llama.cpp's name for an HF tensor name, or None for buffers llama.cpp does not load."""
    stem, _, kind = hf_name.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    if stem in TOP_NAMES:
        return f"{TOP_NAMES[stem]}.{kind}"
    parts = stem.split(".", 3)  # gpt_neox, layers, N, rest
    if len(parts) == 4 and parts[:2] == ["gpt_neox", "layers"] and parts[3] in LAYER_NAMES:
        return f"blk.{parts[2]}.{LAYER_NAMES[parts[3]]}.{kind}"
    return None


def group_qkv(tensor, heads):
    """Per-head [q, k, v] rows -> [all q, all k, all v] rows (weight [3H, in] or bias [3H])."""
    head_dim = tensor.shape[0] // (3 * heads)
    per_head = tensor.reshape((heads, 3, head_dim) + tensor.shape[1:])
    return np.concatenate([per_head[:, part].reshape((-1,) + tensor.shape[1:])
                           for part in range(3)])


def add_tokenizer(writer, tokenizer_path, vocab_size):
    """tokenizer.json's byte-level BPE as llama.cpp's "gpt2" tokenizer, padded to the model's
    vocabulary (Pythia's embedding has 50304 rows, its tokenizer 50277 tokens)."""
    with open(tokenizer_path, encoding="utf-8") as f:
        tokenizer = json.load(f)
    model = tokenizer["model"]
    if model.get("type") != "BPE":
        raise SystemExit(f"{tokenizer_path}: model.type is {model.get('type')!r}, want BPE")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [UNUSED] * vocab_size
    for text, token_id in model["vocab"].items():
        tokens[token_id], types[token_id] = text, NORMAL
    for added in tokenizer.get("added_tokens", []):
        # Added tokens are matched in raw text before BPE, by HF and by llama.cpp alike.
        tokens[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    writer.add_string("tokenizer.ggml.model", "gpt2")
    # GPT-NeoX's ByteLevel pre-tokenizer splits with GPT-2's pattern.
    writer.add_string("tokenizer.ggml.pre", "gpt-2")
    writer.add_strings("tokenizer.ggml.tokens", tokens)
    writer.add_int32s("tokenizer.ggml.token_type", types)
    writer.add_strings("tokenizer.ggml.merges", merges)
    return tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--outtype", default="f16", choices=["f16", "f32"],
                        help="type of the matrices (1-D tensors are always f32)")
    args = parser.parse_args()
    with open(os.path.join(args.checkpoint, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    vocab_size = config["vocab_size"]

    writer = GgufWriter()
    writer.add_string("general.architecture", ARCH)
    writer.add_string("general.name", os.path.basename(os.path.normpath(args.checkpoint)))
    writer.add_uint32("general.file_type", 1 if args.outtype == "f16" else 0)  # MOSTLY_F16 / ALL_F32
    writer.add_uint32(f"{ARCH}.context_length", config["max_position_embeddings"])
    writer.add_uint32(f"{ARCH}.embedding_length", hidden)
    writer.add_uint32(f"{ARCH}.block_count", config["num_hidden_layers"])
    writer.add_uint32(f"{ARCH}.feed_forward_length", config["intermediate_size"])
    writer.add_uint32(f"{ARCH}.rope.dimension_count",
                      int(config.get("rotary_pct", 1.0) * (hidden // heads)))
    writer.add_float32(f"{ARCH}.rope.freq_base", config.get("rotary_emb_base", 10000.0))
    writer.add_uint32(f"{ARCH}.attention.head_count", heads)
    writer.add_float32(f"{ARCH}.attention.layer_norm_epsilon", config.get("layer_norm_eps", 1e-5))
    writer.add_bool(f"{ARCH}.use_parallel_residual", config.get("use_parallel_residual", True))
    add_tokenizer(writer, os.path.join(args.checkpoint, "tokenizer.json"), vocab_size)
    writer.add_uint32("tokenizer.ggml.bos_token_id", config.get("bos_token_id", 0))
    writer.add_uint32("tokenizer.ggml.eos_token_id", config.get("eos_token_id", 0))
    writer.add_bool("tokenizer.ggml.add_bos_token", False)  # Pythia prompts carry no BOS

    matrix_type = np.float16 if args.outtype == "f16" else np.float32
    for hf_name, tensor in load_file(os.path.join(args.checkpoint, "model.safetensors")).items():
        name = gguf_name(hf_name)
        if name is None:
            continue
        if ".attn_qkv." in name:
            tensor = group_qkv(tensor, heads)
        writer.add_tensor(name, tensor.astype(matrix_type if tensor.ndim == 2 else np.float32))
    writer.write(args.out)
    print(f"wrote {args.out} ({args.outtype})")


if __name__ == "__main__":
    main()
