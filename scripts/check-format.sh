#!/usr/bin/env bash
# Checks that every C++ source is formatted by .clang-format with Debian 12's clang-format 14
# (other versions format some constructs differently, so the version is pinned).
#   scripts/check-format.sh          check; exit 1 listing the files that differ
#   scripts/check-format.sh --fix    rewrite them
set -euo pipefail
cd "$(dirname "$0")/.."
clang_format=${CLANG_FORMAT:-clang-format}
version=$("$clang_format" --version)
if [[ "$version" != *"version 14."* ]]; then
  echo "check-format: needs clang-format 14 (Debian 12's), found: $version" >&2
  exit 2
fi
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')
if [[ "${1:-}" == --fix ]]; then
  "$clang_format" -i "${files[@]}"
  exit 0
fi
bad=()
for file in "${files[@]}"; do
  if ! "$clang_format" --dry-run --Werror "$file" > /dev/null 2>&1; then bad+=("$file"); fi
done
if ((${#bad[@]})); then
  printf 'check-format: not formatted: %s\n' "${bad[@]}" >&2
  echo "check-format: run scripts/check-format.sh --fix" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted"
