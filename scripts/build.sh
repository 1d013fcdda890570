#!/usr/bin/env bash
# Configures and builds sinkserve (Release) into ${BUILD_DIR:-build}: every target, or only
# $TARGET when set (scripts/run.sh builds TARGET=sinkserve).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build "$build_dir" -j "$jobs" ${TARGET:+--target "$TARGET"}
