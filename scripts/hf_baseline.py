#!/usr/bin/env python3
"""The side-by-side baseline of scripts/gpu-check.sh: HF transformers, fp16, batch 1, on a
Pythia-2.8B-shaped GPTNeoX with random weights, with the seed's protocol (docs/benchmark-protocol.md): a
500-token prompt, 500 greedy tokens. TTFT = one forward of the prompt; TPOT = (total − TTFT) /
(n − 1); peak memory = torch.cuda.max_memory_allocated. Writes JSON to argv[1] if given."""
import json
import sys
import time

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

PROMPT, GENERATE = 500, 500


def main() -> None:
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=2560, num_hidden_layers=32,
                           num_attention_heads=32, intermediate_size=10240,
                           max_position_embeddings=2048, rotary_pct=0.25,
                           rotary_emb_base=10000, use_parallel_residual=True,
                           bos_token_id=0, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = GPTNeoXForCausalLM(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, PROMPT), device="cuda")
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        model(prompt, use_cache=True)
        torch.cuda.synchronize()
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=GENERATE, min_new_tokens=GENERATE,
                             do_sample=False)
        torch.cuda.synchronize()
        total = time.perf_counter() - start
    generated = out.shape[1] - PROMPT
    tpot = (total - ttft) / (generated - 1)
    result = {"config": "HF transformers fp16 (dense cache)", "batch": 1,
              "tokens_per_second": generated / total, "tpot_ms": tpot * 1e3,
              "ttft_ms": ttft * 1e3,
              "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
              "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    print("| {config} | 1 | {tokens_per_second:.1f} | {tpot_ms:.3f} | {ttft_ms:.2f} | - | "
          "{peak_gpu_memory_gb:.2f} | - |".format(**result))
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
