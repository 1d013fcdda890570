#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: install dependencies, build, run every test.
# The evaluation data: $SINKSERVE_DATA_DIR, else data/ (scripts/fetch-data.sh).
#   unit, model, e2e, server — the ctest suites (Release build); server runs the gRPC server on
#                      loopback (overload, faults, security included), and a real Prometheus
#   bench             — sinkserve-bench (load, ppl, table) against servers on loopback
#   fresh clone       — the repository cloned to build/fresh-clone: its tokenizer_test fails
#                      naming scripts/fetch-data.sh without the data, passes with it
#   gpu               — the CUDA backend against the CPU (skipped without a GPU)
#   deploy            — deploy/ (compose, Kubernetes, Prometheus rules, the Grafana dashboard's
#                      queries) against real tools, and session affinity behind nginx
#   image             — the Dockerfile built with podman and run (opt-in: SINKSERVE_IMAGE_TEST=1;
#                      it compiles sinkserve from scratch: 20-40 minutes on two cores)
#   soak              — mixed load at saturation for SOAK_SECONDS (default 120)
#   tsan (engine)     — build-tsan (clang, TSan) of the engine and scheduler_test only: the real
#                      scheduler driven from many client threads (no gRPC), halt_on_error
#   asan              — build-asan (clang, ASan+UBSan on every target): the unit, model, e2e and
#                      server suites again, then each libFuzzer target for FUZZ_SECONDS (60)
#   tsan (TSAN=1)     — build-tsan: the server suites too. Opt-in: Debian's gRPC and absl are
#                      not built with TSan, so it reports their internal hand-offs
#                      (see RELIABILITY.md); it needs a TSan-built gRPC to be clean.
# SKIP_FUZZ=1 skips the fuzzers, SKIP_ASAN=1 the ASan build, SKIP_SOAK=1 the soak.
# RELIABILITY.md has the wall times of each part on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/check-layers.py   # every #include points down the layers (docs/architecture.md)
scripts/check-format.sh   # C++ files changed since the format baseline are clang-format 14 clean
scripts/build.sh
tests/deploy/setup_venv.sh build/deploy-venv
labels='unit|model|e2e|server|bench|gpu|deploy'
if [[ "${SINKSERVE_IMAGE_TEST:-0}" == 1 ]]; then labels+='|image'; fi
(cd build && ctest --output-on-failure -L "$labels" -j "$(nproc)")
scripts/fresh-clone-check.sh  # the data-dependent tests in a clone, without and with the data

if [[ "${SKIP_SOAK:-0}" != 1 ]]; then
  cmake -S . -B build -DSINKSERVE_SOAK_SECONDS="${SOAK_SECONDS:-120}" > /dev/null
  cmake --build build -j "$(nproc)" --target server_soak_test
  (cd build && ctest --output-on-failure -L soak)
fi

# Sanitizer reports fail the test that triggers them.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
sanitizer_build() {  # sanitizer_build DIR CMAKE_ARGS...
  local dir=$1
  shift
  # Configured every run (seconds when cached) so new options reach existing directories. The
  # Python client test (label server) runs against the sanitized sinkserve in build's venv.
  CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSINKSERVE_BUILD_BENCHMARKS=OFF -DSINKSERVE_WITH_CUDA=OFF \
    -DSINKSERVE_DEPLOY_VENV="$PWD/build/deploy-venv" "$@" > /dev/null
}

# The scheduler's threads under TSan: engine library + scheduler_test, no gRPC, so it is clean
# (tests/tsan.supp: only absl::Status's refcount, in an uninstrumented library, applies here).
sanitizer_build build-tsan -DSINKSERVE_SANITIZE=thread
cmake --build build-tsan -j "$(nproc)" --target scheduler_test
(cd build-tsan && ctest --output-on-failure -R '^scheduler_test$')

if [[ "${SKIP_ASAN:-0}" != 1 ]]; then
  sanitizer_build build-asan -DSINKSERVE_BUILD_FUZZERS=ON \
    -DSINKSERVE_FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
  cmake --build build-asan -j "$(nproc)"
  (cd build-asan && ctest --output-on-failure -L 'unit|model|e2e|server' -j "$(nproc)")
  if [[ "${SKIP_FUZZ:-0}" != 1 ]]; then
    (cd build-asan && ctest --output-on-failure -L fuzz -j "$(nproc)")
  fi
fi

if [[ "${TSAN:-0}" == 1 ]]; then
  cmake --build build-tsan -j "$(nproc)" --target sinkserve server_generate_test \
    server_scheduling_test server_validation_test server_overload_test server_faults_test \
    server_security_test
  (cd build-tsan && ctest --output-on-failure -L server -E 'lifecycle' -j "$(nproc)")
fi
