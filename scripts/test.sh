#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: install dependencies, build, run every test.
#   unit, model, e2e, server — the ctest suites (Release build); server runs the gRPC server on
#                      loopback, and a real Prometheus against it
#   bench             — sinkserve-bench (load, ppl, table) against servers on loopback
#   gpu               — the CUDA backend against the CPU (skipped without a GPU)
#   deploy            — deploy/ (compose, Kubernetes, Prometheus rules, the Grafana dashboard's
#                      queries) against real tools, and session affinity behind nginx
#   image             — the Dockerfile built with podman and run (opt-in: SINKSERVE_IMAGE_TEST=1;
#                      it compiles sinkserve from scratch: 20-40 minutes on two cores)
#   fuzz              — each libFuzzer target for FUZZ_SECONDS (default 30) on its corpus
# Set SKIP_FUZZ=1 to skip the fuzzers (they need clang and rebuild the libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
tests/deploy/setup_venv.sh build/deploy-venv
labels='unit|model|e2e|server|bench|gpu|deploy'
if [[ "${SINKSERVE_IMAGE_TEST:-0}" == 1 ]]; then labels+='|image'; fi
(cd build && ctest --output-on-failure -L "$labels" -j "$(nproc)")

if [[ "${SKIP_FUZZ:-0}" != 1 ]]; then
  if [[ ! -f build-fuzz/build.ninja ]]; then
    CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSINKSERVE_BUILD_FUZZERS=ON -DSINKSERVE_BUILD_BENCHMARKS=OFF -DSINKSERVE_WITH_CUDA=OFF \
      -DSINKSERVE_FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
  fi
  cmake --build build-fuzz -j "$(nproc)" --target tokenizer_fuzz safetensors_fuzz
  (cd build-fuzz && ctest --output-on-failure -L fuzz)
fi
