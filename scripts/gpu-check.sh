#!/usr/bin/env bash
# The GPU check, in two halves (docs/benchmark-protocol.md, "The machines we measure on":
# the GPU machine has CUDA, PyTorch and transformers but none of our Debian packages and no network):
#
#   scripts/gpu-check.sh bundle       here: build, then copy the GPU programs, the server and the
#                                     load generator, their non-CUDA shared libraries and the
#                                     table's texts into gpu-bundle/, packed as gpu-bundle.tar.xz
#                                     (~20 MB: what a device call carries; both git-ignored)
#   scripts/gpu-check.sh run OUT_DIR  there, from the repository root with gpu-bundle.tar.xz (or
#                                     gpu-bundle/) beside:
#                                     the gpu tests, the decode benchmark on a Pythia-2.8B-shaped
#                                     model, the HF transformers baseline, then each kernel on
#                                     that model's shapes against the copy bandwidth; tables on
#                                     stdout, logs and JSON in OUT_DIR. Under 8 minutes on an H100.
#   scripts/gpu-check.sh table OUT_DIR there, after `run` if the lease has ~5 minutes left: the
#                                     benchmark table (docs/benchmark-protocol.md) through the
#                                     real server on the GPU
#                                     (deploy/bench/reproduce.sh, BACKEND=cuda) on a random
#                                     Pythia-2.8B-shaped checkpoint drawn there.
set -euo pipefail
cd "$(dirname "$0")/.."

# On the GPU machine: makes OUT_DIR, unpacks the carried archive afresh (a device machine keeps
# ignored files between calls, so an old gpu-bundle/ may be there; Python's tarfile, as the
# machine may lack xz), and points the loader at the bundle's libraries and the machine's
# cuBLASLt.
prepare() {
  mkdir -p "$1"
  if [[ -f gpu-bundle.tar.xz ]]; then
    rm -rf gpu-bundle
    python3 -c 'import tarfile; tarfile.open("gpu-bundle.tar.xz").extractall()'
  fi
  local cublas
  cublas=$(dirname "$(find / -name 'libcublasLt.so.13' -not -path '*/proc/*' 2>/dev/null | head -1)")
  export LD_LIBRARY_PATH="$PWD/gpu-bundle/lib:$cublas:${LD_LIBRARY_PATH:-}"
}

case "${1:-}" in
  bundle)
    scripts/build.sh
    ninja -C "${BUILD_DIR:-build}" cuda_kernels_test cuda_backend_test cuda_decode_bench \
      cuda_kernels_bench
    rm -rf gpu-bundle && mkdir -p gpu-bundle/lib
    cp "${BUILD_DIR:-build}"/tests/gpu/cuda_kernels_test "${BUILD_DIR:-build}"/tests/gpu/cuda_backend_test \
       "${BUILD_DIR:-build}"/tests/bench/cuda_decode_bench \
       "${BUILD_DIR:-build}"/tests/bench/cuda_kernels_bench \
       "${BUILD_DIR:-build}"/server/sinkserve "${BUILD_DIR:-build}"/client/sinkserve-bench gpu-bundle/
    # The texts and tokenizer of the table, from $SINKSERVE_DATA_DIR or data/
    # (scripts/fetch-data.sh).
    data=${SINKSERVE_DATA_DIR:-data}
    for file in wikitext-2-raw/wiki.test.raw books/moby-dick.txt tokenizer/tokenizer.json; do
      [[ -f $data/$file ]] || { echo "gpu-check: $data/$file missing: run scripts/fetch-data.sh" >&2; exit 1; }
      mkdir -p "gpu-bundle/data/$(dirname "$file")"
      cp "$data/$file" "gpu-bundle/data/$file"
    done
    # Every shared library but glibc's and CUDA's (the GPU machine has its own CUDA 13).
    ldd gpu-bundle/cuda_* gpu-bundle/sinkserve gpu-bundle/sinkserve-bench | awk '/=> \// {print $3}' |
      sort -u | grep -v -E 'libcublas|libcuda|/libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|ld-linux' |
      xargs -I{} cp -L {} gpu-bundle/lib/
    du -sh gpu-bundle
    XZ_OPT=-6T0 tar -cJf gpu-bundle.tar.xz gpu-bundle
    du -h gpu-bundle.tar.xz
    ;;
  run)
    out=${2:?usage: scripts/gpu-check.sh run OUT_DIR}
    prepare "$out"
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
  table)
    out=${2:?usage: scripts/gpu-check.sh table OUT_DIR}
    prepare "$out"
    model=/tmp/pythia-2.8b-random
    [[ -f $model/config.json ]] ||
      timeout 180 python3 deploy/bench/random_pythia_checkpoint.py "$model" --size 2.8b \
        --device cuda --tokenizer gpu-bundle/data/tokenizer/tokenizer.json 2>&1 | tail -1
    BACKEND=cuda SINKSERVE=gpu-bundle/sinkserve SINKSERVE_BENCH=gpu-bundle/sinkserve-bench \
      SINKSERVE_DATA_DIR=gpu-bundle/data timeout 420 deploy/bench/reproduce.sh "$model" "$out" \
      --spawn-timeout-s 180 2>&1 | tail -20 || true
    ;;
  *)
    sed -n 2,18p "$0"
    exit 2
    ;;
esac
