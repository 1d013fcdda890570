#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: install dependencies, build, run sinkserve.
# With no arguments it streams text from the built-in demo model (random weights);
# any arguments are passed to sinkserve, e.g.
#   scripts/run.sh perplexity --model /models/pythia-160m --text-file wiki.test.raw --max-tokens 1000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh >&2
if (($# == 0)); then
  set -- generate --prompt "The attention sink is" --max-new-tokens 64
fi
exec build/server/sinkserve "$@"
