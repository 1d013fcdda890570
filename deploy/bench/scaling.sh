#!/usr/bin/env bash
# Continuous-batching scaling of one sinkserve server: closed-loop load with 1, 4 and 16
# concurrent Generate streams (sinkserve-bench load), aggregate output tokens/s and p50/p99
# TPOT per level, and the 16-vs-1 throughput ratio.
#
#   deploy/bench/scaling.sh MODEL_DIR [OUT_DIR] [extra sinkserve serve flags...]
#
# MODEL_DIR: a GPT-NeoX checkpoint (e.g. deploy/bench/random_pythia_checkpoint.py --size 160m).
# OUT_DIR (default bench-results/scaling): scaling.md, one JSON per level, the server's log.
# Environment: LEVELS (default "1 4 16"), PROMPT_TOKENS / NEW_TOKENS (default 128 / 128),
# ROUNDS (default 3: requests per level = ROUNDS x streams, at least 6),
# SINKSERVE / SINKSERVE_BENCH (the programs, default build/).
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
model=$(cd "$1" && pwd)
out=${2:-bench-results/scaling}
shift $(( $# >= 2 ? 2 : 1 ))
root=$(cd "$(dirname "$0")/../.." && pwd)
sinkserve=${SINKSERVE:-$root/build/server/sinkserve}
bench=${SINKSERVE_BENCH:-$root/build/client/sinkserve-bench}
levels=${LEVELS:-1 4 16}
rounds=${ROUNDS:-3}
mkdir -p "$out"
out=$(cd "$out" && pwd)

"$sinkserve" serve --model "$model" --port 0 --metrics-port -1 --max-batch 16 "$@" \
  > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
port=
for _ in $(seq 600); do
  port=$(sed -n 's/.*listening grpc=[^ ]*:\([0-9]*\) .*/\1/p' "$out/server.log" | head -1)
  grep -q 'health=SERVING' "$out/server.log" && break
  kill -0 $server 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n $port ]] || { echo "scaling.sh: the server did not start" >&2; exit 1; }

for level in $levels; do
  requests=$(( rounds * level < 6 ? 6 : rounds * level ))
  echo "scaling.sh: $level stream(s), $requests requests" >&2
  "$bench" load --target "127.0.0.1:$port" --concurrency "$level" --requests "$requests" \
    --prompt-tokens "${PROMPT_TOKENS:-128}" --max-new-tokens "${NEW_TOKENS:-128}" \
    --json "$out/load-$level.json" > "$out/load-$level.txt"
done

python3 - "$out" $levels > "$out/scaling.md" <<'PY'
import json, sys
out, levels = sys.argv[1], sys.argv[2:]
rows = [(level, json.load(open(f"{out}/load-{level}.json"))) for level in levels]
base = rows[0][1]["output_throughput"]
print("| streams | output tok/s | × 1 stream | TPOT p50 (ms) | TPOT p99 (ms) | TTFT p50 (ms) |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for level, r in rows:
    print(f"| {level} | {r['output_throughput']:.1f} | {r['output_throughput'] / base:.2f}× "
          f"| {r['median_tpot_ms']:.1f} | {r['p99_tpot_ms']:.1f} | {r['median_ttft_ms']:.0f} |")
PY
cat "$out/scaling.md"
