#!/usr/bin/env bash
# lm-evaluation-harness against sinkserve's OpenAI API (issue 15): `lm_eval --model
# local-completions` on POST /v1/completions, offline (no Hugging Face hub), then a check that
# the log-likelihoods lm_eval got are our Score RPC's for the same tokens.
#
#   deploy/bench/lm-eval.sh [--model DIR|demo] [--docs N]
#
#   --model  a GPT-NeoX checkpoint folder with its tokenizer.json, or demo (the default: the
#            built-in random model and its byte tokenizer)
#   --docs   WikiText-2 paragraphs to score (default 20)
#
# What runs: deploy/bench/lm_eval_local.py writes a local task (a loglikelihood_rolling task on
# a JSONL of WikiText paragraphs, read by the `datasets` json builder) and an HF tokenizer folder
# for the model; `sinkserve serve` starts on free loopback ports; lm_eval runs with
# tokenizer_backend=huggingface on that folder and tokenized_requests=True, so it sends token
# ids and reads the prompt's logprobs back (echo: true, logprobs: 1, max_tokens: 1); its table
# (word and byte perplexity, bits per byte) is printed and the per-document log-likelihoods are
# compared with the Score RPC's. Not part of ctest: it installs lm-eval (~400 MB with its
# dependencies, no torch) into a venv of its own.
# Environment:
#   SINKSERVE_CACHE     where the venv lives (default ~/.cache/sinkserve/lm-eval-venv)
#   SINKSERVE_DATA_DIR  evaluation data holding wikitext-2-raw/wiki.test.raw (default data/)
#   SINKSERVE           our program (default build/server/sinkserve: scripts/build.sh first)
#   THREADS (default 2), OUT (default bench-results/lm-eval: the task, logs and lm_eval's output)
set -euo pipefail

LM_EVAL_VERSION=0.4.13

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die() { echo "lm-eval.sh: $*" >&2; exit 1; }
log() { echo "lm-eval.sh: $*" >&2; }

model=demo
docs=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --model) [[ $# -ge 2 ]] || die "--model needs a folder, or demo"; model=$2; shift ;;
    --docs) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--docs needs a positive integer"
            docs=$2; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${SINKSERVE_CACHE:-$HOME/.cache/sinkserve}
data=${SINKSERVE_DATA_DIR:-$root/data}
wikitext=$data/wikitext-2-raw/wiki.test.raw
[[ -f "$wikitext" ]] || die "no $wikitext: fetch the data with scripts/fetch-data.sh (or set SINKSERVE_DATA_DIR)"
sinkserve=${SINKSERVE:-$root/build/server/sinkserve}
[[ -x "$sinkserve" ]] || die "no $sinkserve: build it first (scripts/build.sh)"
if [[ "$model" == demo ]]; then
  tokenizer=demo
else
  model=$(cd "$model" && pwd) || die "--model $model: no such folder"
  tokenizer=$model/tokenizer.json
  [[ -f "$tokenizer" ]] || die "--model $model has no tokenizer.json (lm_eval needs it to count tokens)"
fi
threads=${THREADS:-2}
out=${OUT:-$root/bench-results/lm-eval}
rm -rf "$out" && mkdir -p "$out"

venv=$cache/lm-eval-venv
if ! "$venv/bin/python" -c "import lm_eval, transformers, grpc_tools" 2>/dev/null; then
  log "creating $venv (lm-eval $LM_EVAL_VERSION with its API extra, transformers, grpcio-tools)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "lm-eval[api]==$LM_EVAL_VERSION" transformers grpcio grpcio-tools
fi
python=$venv/bin/python
# Nothing may come from the hub: the task and the tokenizer are local files.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
  TRANSFORMERS_NO_ADVISORY_WARNINGS=1

"$python" "$root/deploy/bench/lm_eval_local.py" prepare "$out" --wikitext "$wikitext" \
  --docs "$docs" --tokenizer "$tokenizer"

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port)
http_port=$(free_port)
"$sinkserve" serve --model "$model" --host 127.0.0.1 --port "$grpc_port" --http-port "$http_port" \
  --metrics-port -1 --served-model-name sinkserve --threads "$threads" > "$out/sinkserve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -fs "http://127.0.0.1:$http_port/ready" > /dev/null && break
  kill -0 "$server" 2>/dev/null || die "sinkserve exited: see $out/sinkserve.log"
  sleep 0.5
done
curl -fs "http://127.0.0.1:$http_port/ready" > /dev/null || die "sinkserve not ready after 300 s"
context=$(curl -fs "http://127.0.0.1:$http_port/v1/models" |
          "$python" -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["max_model_len"])')
log "sinkserve serves $model (context $context) at http://127.0.0.1:$http_port/v1"

"$venv/bin/lm_eval" --model local-completions \
  --model_args "model=sinkserve,base_url=http://127.0.0.1:$http_port/v1/completions,tokenizer_backend=huggingface,tokenizer=$out/tokenizer,tokenized_requests=True,max_length=$context" \
  --tasks sinkserve_wikitext --include_path "$out/tasks" --batch_size 1 \
  --output_path "$out/results" --log_samples > "$out/lm_eval.log" 2>&1 ||
  die "lm_eval failed: see $out/lm_eval.log"
sed -n '/^local-completions/,$p' "$out/lm_eval.log"

samples=$(find "$out/results" -name 'samples_sinkserve_wikitext_*.jsonl' | head -1)
[[ -n "$samples" ]] || die "lm_eval wrote no samples under $out/results"
"$python" "$root/deploy/bench/lm_eval_local.py" compare "$out" --samples "$samples" \
  --grpc "127.0.0.1:$grpc_port"
