#!/usr/bin/env bash
# Reproduces the benchmark table of docs/benchmark-protocol.md on this machine: the seed's four
# configurations, each served by its own sinkserve process (so peak memory is per
# configuration), measured by `sinkserve-bench table`.
#
#   deploy/bench/reproduce.sh MODEL_DIR [OUT_DIR] [extra sinkserve-bench table flags...]
#
# MODEL_DIR: a Hugging Face GPT-NeoX checkpoint with tokenizer.json (e.g. pythia-2.8b).
# OUT_DIR (default bench-results/): table.md, table.json and the servers' logs.
# Environment: BACKEND (auto|cpu|cuda, default auto), SINK / WINDOW (default 4 / 256),
# SINKSERVE_DATA_DIR (the texts; default the repo's data/, filled by scripts/fetch-data.sh),
# SINKSERVE / SINKSERVE_BENCH (the programs, default build/).
# The seed's protocol is the default: PPL over the first 1000 tokens in 512-token chunks,
# greedy generation of 500 tokens after a 500-token prompt; override with extra flags, e.g.
# `--max-new-tokens 128` for a quick run.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
model=$(cd "$1" && pwd)
out=${2:-bench-results}
shift $(( $# >= 2 ? 2 : 1 ))
root=$(cd "$(dirname "$0")/../.." && pwd)
sinkserve=${SINKSERVE:-$root/build/server/sinkserve}
bench=${SINKSERVE_BENCH:-$root/build/client/sinkserve-bench}
backend=${BACKEND:-auto}
sink=${SINK:-4}
window=${WINDOW:-256}
mkdir -p "$out"
out=$(cd "$out" && pwd)

serve="'$sinkserve' serve --model '$model' --backend $backend"
streaming="--sink $sink --window $window"
"$bench" table \
  --spawn "Baseline (FP16, dense cache)=$serve --quant fp16 --dense" \
  --spawn "Streaming (FP16)=$serve --quant fp16 $streaming" \
  --spawn "Streaming + Int8=$serve --quant int8 $streaming" \
  --spawn "Streaming + NF4=$serve --quant nf4 --double-quant $streaming" \
  --tokenizer "$model/tokenizer.json" \
  --log-dir "$out" --markdown "$out/table.md" --json "$out/table.json" "$@"
echo "reproduce.sh: wrote $out/table.md and $out/table.json" >&2
