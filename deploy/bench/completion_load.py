#!/usr/bin/env python3
"""A closed-loop load client for llama-server's streaming /completion endpoint, measured the
way `sinkserve-bench load` measures a sinkserve server: CONCURRENCY requests in flight, REQUESTS
in all, each a prompt of PROMPT_TOKENS random token ids and exactly MAX_NEW_TOKENS generated
(greedy, end-of-text ignored), after one warm-up request alone. Output throughput = generated
tokens of all requests ÷ the wall time from the first request's start to the last one's end.

    completion_load.py --url http://127.0.0.1:8080 [--concurrency 16] [--requests 32]
                       [--prompt-tokens 128] [--max-new-tokens 128] [--vocab 50304] [--seed 0]

Prints one JSON object: output_throughput (tok/s), completed, total_output_tokens,
duration_s, ttft_ms_p50, tpot_ms_p50. Needs aiohttp (the benchmark's venv).
"""
import argparse
import asyncio
import json
import random
import statistics
import sys
import time

import aiohttp


async def complete(session, url, prompt, max_new_tokens):
    """One streamed request: (generated tokens, TTFT s, end-to-end s)."""
    body = {"prompt": prompt, "n_predict": max_new_tokens, "ignore_eos": True, "stream": True,
            "temperature": 0.0, "cache_prompt": False}
    start = time.perf_counter()
    first = None
    generated = 0
    async with session.post(url + "/completion", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"/completion: HTTP {response.status}: {await response.text()}")
        async for raw in response.content:  # server-sent events, one "data: {...}" a line
            line = raw.decode("utf-8").strip()
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: "):])
            if first is None and event.get("content"):
                first = time.perf_counter()
            if event.get("stop"):
                generated = event["tokens_predicted"]
    end = time.perf_counter()
    return generated, (first or end) - start, end - start


async def run(args):
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(args.vocab) for _ in range(args.prompt_tokens)]
               for _ in range(args.requests + 1)]
    timeout = aiohttp.ClientTimeout(total=args.request_timeout_s)
    # A fresh connection per request: llama-server may close a kept-alive one at any time.
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await complete(session, args.url, prompts.pop(), args.max_new_tokens)  # warm-up
        queue = list(reversed(prompts))
        results = []

        async def worker():
            while queue:
                results.append(await complete(session, args.url, queue.pop(),
                                              args.max_new_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        duration = time.perf_counter() - start
    total = sum(generated for generated, _, _ in results)
    tpot = [(e2e - ttft) / (generated - 1) for generated, ttft, e2e in results if generated > 1]
    return {"output_throughput": total / duration, "completed": len(results),
            "total_output_tokens": total, "duration_s": duration,
            "ttft_ms_p50": 1e3 * statistics.median(ttft for _, ttft, _ in results),
            "tpot_ms_p50": 1e3 * statistics.median(tpot) if tpot else 0.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="llama-server's base URL")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=50304,
                        help="prompt ids are drawn below it (sinkserve-bench: the model vocabulary)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--request-timeout-s", type=float, default=600)
    args = parser.parse_args()
    for name in ("concurrency", "requests", "prompt_tokens", "max_new_tokens", "vocab"):
        if getattr(args, name) < 1:
            sys.exit(f"--{name.replace('_', '-')} must be >= 1")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
