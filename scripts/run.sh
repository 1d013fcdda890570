#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: install dependencies, build sinkserve, start the
# gRPC server in the foreground (Ctrl-C drains it and exits 0).
#   scripts/run.sh                        serve the built-in demo model (random weights)
#   scripts/run.sh --model DIR [flags]    serve a model; any `sinkserve serve` flags may follow
#   scripts/run.sh [serve flags]          the same: a first argument starting with - means serve
#   scripts/run.sh COMMAND [flags]        any other sinkserve command (generate, perplexity,
#                                         tokenize, health, serve...), e.g.
#     scripts/run.sh generate --prompt "The attention sink is" --max-new-tokens 64
#     scripts/run.sh perplexity --model /models/pythia-160m --text-file wiki.test.raw --max-tokens 1000
# Before serving it prints copy-paste commands that call the server on its actual ports. The
# install and the build are skipped when already done (about a second). BUILD_DIR picks the build
# directory (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
TARGET=sinkserve scripts/build.sh >&2
sinkserve=${BUILD_DIR:-build}/server/sinkserve
if (($# > 0)) && [[ $1 != -* || $1 == -h || $1 == --help ]]; then
  exec "$sinkserve" "$@"
fi

args=("$@")
serve_help=$("$sinkserve" serve --help)
# flag NAME: its value in the arguments (the last one wins, as in sinkserve), else its default
# as `sinkserve serve --help` prints it; empty when unset (or when serve has no such flag).
flag() {
  local name=$1 value i
  value=$(sed -n "s/^  --$name .*(default \"\{0,1\}\([^\")]*\)\"\{0,1\})\$/\1/p" <<<"$serve_help")
  for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
      "--$name="*) value=${args[i]#*=} ;;
      "--$name") value=${args[i + 1]:-} ;;
    esac
  done
  printf '%s' "$value"
}
address() {  # address PORT: where a client on this machine reaches the server's PORT
  local host port=$1
  host=$(flag host)
  case $host in
    "" | 0.0.0.0 | :: | "[::]") host=localhost ;;
    *:*) [[ $host == \[* ]] || host="[$host]" ;;  # IPv6
  esac
  if [[ $port == 0 ]]; then port=PORT; fi  # chosen at start: the 'listening' log line says which
  printf '%s:%s' "$host" "$port"
}

grpcurl_security=-plaintext
if [[ -n $(flag tls-cert) ]]; then grpcurl_security="-cacert $(printf %q "$(flag tls-cert)")"; fi
header=""  # the bearer token, when the server asks for one
if [[ -n $(flag auth-token-file) ]]; then
  header=" -H \"authorization: Bearer \$(head -n1 $(printf %q "$(flag auth-token-file)"))\""
elif [[ -n $(flag auth-token) ]]; then
  header=" -H 'authorization: Bearer $(flag auth-token)'"
fi
{
  echo "sinkserve: starting the server (Ctrl-C drains and stops it). Once it logs \"serving\":"
  echo "  grpcurl $grpcurl_security$header -d '{\"prompt_text\": \"The attention sink is\"," \
    "\"max_new_tokens\": 32}' $(address "$(flag port)") sinkserve.v1.Sinkserve/Generate"
  if [[ $(flag metrics-port) != -1 ]]; then
    echo "  curl -s $(address "$(flag metrics-port)")/metrics | grep '^sinkserve_'"
  fi
  if grep -q -- '^  --http-port ' <<<"$serve_help" && [[ $(flag http-port) != -1 ]]; then
    echo "  curl -s $(address "$(flag http-port)")/v1/completions$header" \
      "-H 'Content-Type: application/json'" \
      "-d '{\"prompt\": \"The attention sink is\", \"max_tokens\": 32}'"
  fi
} >&2
exec "$sinkserve" serve "$@"
