#!/usr/bin/env python3
"""One line per benchmark of cuda_kernels_bench's JSON: time per launch, bandwidth, and the
fraction of the copy bandwidth measured in the same run (BM_CopyBandwidth) — the ratio to the
bound of each kernel. Usage: gpu_kernels_summary.py cuda_kernels_bench.json"""
import json
import sys


def main(path):
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    ceiling = next((r["bytes_per_second"] for r in runs
                    if r["name"].startswith("BM_CopyBandwidth") and "bytes_per_second" in r), None)
    if ceiling:
        print(f"copy bandwidth (read + write): {ceiling / 1e12:.2f} TB/s")
    errors = {}
    for r in runs:
        if r.get("error_occurred"):
            errors.setdefault(r.get("error_message", "error"), []).append(r["name"])
            continue
        if r["name"].startswith("BM_CopyBandwidth"):
            continue
        rate = r.get("bytes_per_second", 0)
        share = f"  {rate / ceiling:.2f} of copy" if ceiling else ""
        name = r["name"].replace("/manual_time", "")
        print(f"{name:<28} {r.get('label', ''):<28} {r['real_time']:9.2f} us "
              f"{rate / 1e9:8.0f} GB/s{share}")
    for message, names in errors.items():
        print(f"{len(names)} benchmarks failed ({names[0]}, ...): {message}")


if __name__ == "__main__":
    main(sys.argv[1])
