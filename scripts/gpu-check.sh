#!/usr/bin/env bash
# The GPU check, in two halves (DESIGN §8: the GPU machine has CUDA, PyTorch and transformers
# but none of our Debian packages and no network):
#
#   scripts/gpu-check.sh bundle       here: build, then copy the GPU programs and their
#                                     non-CUDA shared libraries into gpu-bundle/ (git-ignored)
#   scripts/gpu-check.sh run OUT_DIR  there, from the repository root with gpu-bundle/ beside:
#                                     the gpu tests, the decode benchmark on a Pythia-2.8B-shaped
#                                     model, the HF transformers baseline, then each kernel on
#                                     that model's shapes against the copy bandwidth; tables on
#                                     stdout, logs and JSON in OUT_DIR. Under 8 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  bundle)
    scripts/build.sh
    ninja -C "${BUILD_DIR:-build}" cuda_kernels_test cuda_backend_test cuda_decode_bench \
      cuda_kernels_bench
    rm -rf gpu-bundle && mkdir -p gpu-bundle/lib
    cp "${BUILD_DIR:-build}"/tests/gpu/cuda_kernels_test "${BUILD_DIR:-build}"/tests/gpu/cuda_backend_test \
       "${BUILD_DIR:-build}"/tests/bench/cuda_decode_bench \
       "${BUILD_DIR:-build}"/tests/bench/cuda_kernels_bench gpu-bundle/
    # Every shared library but glibc's and CUDA's (the GPU machine has its own CUDA 13).
    ldd gpu-bundle/cuda_* | awk '/=> \// {print $3}' |
      sort -u | grep -v -E 'libcublas|libcuda|/libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|ld-linux' |
      xargs -I{} cp -L {} gpu-bundle/lib/
    du -sh gpu-bundle
    ;;
  run)
    out=${2:?usage: scripts/gpu-check.sh run OUT_DIR}
    mkdir -p "$out"
    cublas=$(dirname "$(find / -name 'libcublasLt.so.13' -not -path '*/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH="$PWD/gpu-bundle/lib:$cublas:${LD_LIBRARY_PATH:-}"
    export SINKSERVE_FIXTURES="$PWD/tests/fixtures"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
    echo "== gpu tests"
    timeout 60 gpu-bundle/cuda_kernels_test --gtest_brief=1 2>&1 | tee "$out/cuda_kernels_test.log" || true
    timeout 180 gpu-bundle/cuda_backend_test --gtest_brief=1 2>&1 | tee "$out/cuda_backend_test.log" || true
    echo "== decode benchmark (Pythia-2.8B shape, random weights)"
    timeout 240 gpu-bundle/cuda_decode_bench --out "$out" ${BENCH_ARGS:-} 2>&1 | tee "$out/cuda_decode_bench.log" || true
    echo "== HF transformers baseline"
    PYTHONUNBUFFERED=1 timeout 150 python3 scripts/hf_baseline.py "$out/hf_baseline.json" 2>&1 |
      grep -v Warning | tee "$out/hf_baseline.log" || true
    echo "== kernels (Pythia-2.8B shapes)"
    timeout 90 gpu-bundle/cuda_kernels_bench --benchmark_min_time=0.02 \
      --benchmark_out="$out/cuda_kernels_bench.json" --benchmark_out_format=json \
      > "$out/cuda_kernels_bench.log" 2>&1 || true
    python3 scripts/gpu_kernels_summary.py "$out/cuda_kernels_bench.json" || true
    echo "== summary"
    grep -h -E '^\[  (PASSED|FAILED|SKIPPED)|tests? ran' "$out"/cuda_*_test.log || true
    grep '^|' "$out/cuda_decode_bench.log" || true
    grep '^|' "$out/hf_baseline.log" || true
    ;;
  *)
    sed -n 2,11p "$0"
    exit 2
    ;;
esac
