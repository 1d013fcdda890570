#!/usr/bin/env bash
# A fresh clone stands alone: clones this repository's HEAD into build/fresh-clone/repo, builds
# its tokenizer_test (a data-dependent test) and runs it twice: without SINKSERVE_DATA_DIR it
# must fail with the message naming scripts/fetch-data.sh (the clone has no data/); with
# SINKSERVE_DATA_DIR (default: this checkout's data/) it must pass. The clone sits at a fixed
# path so that ccache serves its objects from the previous run.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(cd "${SINKSERVE_DATA_DIR:-data}" && pwd)
work=$PWD/${BUILD_DIR:-build}/fresh-clone
rm -rf "$work"
mkdir -p "$work"
git clone -q "$PWD" "$work/repo"
cmake -S "$work/repo" -B "$work/repo/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSINKSERVE_BUILD_BENCHMARKS=OFF -DSINKSERVE_WITH_CUDA=OFF > "$work/configure.log"
cmake --build "$work/repo/build" -j "$(nproc)" --target tokenizer_test > "$work/build.log"
program=$work/repo/build/tests/unit/tokenizer_test

fail() { echo "fresh-clone-check: $1 (log: $2)" >&2; tail -20 "$2" >&2; exit 1; }
if env -u SINKSERVE_DATA_DIR "$program" > "$work/without-data.log" 2>&1; then
  fail "tokenizer_test passed without any data directory" "$work/without-data.log"
fi
grep -q 'scripts/fetch-data.sh' "$work/without-data.log" ||
  fail "tokenizer_test failed without naming scripts/fetch-data.sh" "$work/without-data.log"
SINKSERVE_DATA_DIR=$data "$program" > "$work/with-data.log" 2>&1 ||
  fail "tokenizer_test failed with SINKSERVE_DATA_DIR=$data" "$work/with-data.log"
rm -rf "$work"
echo "fresh-clone-check: without data the test fails naming scripts/fetch-data.sh; with" \
     "SINKSERVE_DATA_DIR it passes" >&2
