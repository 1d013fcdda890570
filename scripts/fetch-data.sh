#!/usr/bin/env bash
# Downloads the evaluation data (the Pythia tokenizer, WikiText-2 raw test, two Project
# Gutenberg books) from their public sources, prepares it (scripts/prepare_data.py) and checks
# each file against data/SHA256SUMS. data/README.md describes the files and their licences.
#
#   scripts/fetch-data.sh [--dest DIR] [--from RAW_DIR]
#
# --dest DIR      where the files go (default: the repository's data/, which tests and
#                 sinkserve-bench read unless SINKSERVE_DATA_DIR names another directory)
# --from RAW_DIR  use raw files already downloaded into RAW_DIR (the names below) instead of
#                 downloading them
# Nothing is written to DIR unless every file matches its sha256.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/data
from=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dest) dest=${2:?--dest DIR}; shift 2 ;;
    --from) from=${2:?--from RAW_DIR}; shift 2 ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done

# Raw file name and where it is published.
sources=(
  "20B_tokenizer.json https://huggingface.co/EleutherAI/gpt-neox-20b/resolve/main/tokenizer.json"
  "wikitext-2-raw-v1.zip https://wikitext.smerity.com/wikitext-2-raw-v1.zip"
  "pg2701.txt https://www.gutenberg.org/cache/epub/2701/pg2701.txt"
  "pg16.txt https://www.gutenberg.org/cache/epub/16/pg16.txt"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=${from:-$work/raw}
if [[ -z $from ]]; then
  mkdir -p "$raw"
  for source in "${sources[@]}"; do
    read -r name url <<< "$source"
    echo "fetch-data: $url" >&2
    curl -fsSL --retry 3 -o "$raw/$name" "$url"
  done
fi

python3 "$root/scripts/prepare_data.py" "$raw" "$work/out"
if ! (cd "$work/out" && sha256sum --quiet -c "$root/data/SHA256SUMS"); then
  echo "fetch-data: the files above differ from data/SHA256SUMS (a changed upstream?);" \
       "nothing was written to $dest" >&2
  exit 1
fi
while read -r _ relative; do
  mkdir -p "$dest/$(dirname "$relative")"
  cp "$work/out/$relative" "$dest/$relative"
done < "$root/data/SHA256SUMS"
echo "fetch-data: verified and written to $dest" >&2
