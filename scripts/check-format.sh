#!/usr/bin/env bash
# Checks C++ formatting with .clang-format and Debian 12's clang-format 14 (other versions
# format some constructs differently, so the version is pinned).
#
# A ratchet: a C++ file changed by any commit after the last one that touched this script must
# be formatted; files nobody has touched since are left alone until someone does (formatting the
# whole tree at once would bury every line's history under one commit). The baseline was set
# after the layout change of 2026-12-05; committing this script moves it.
#   scripts/check-format.sh          check the changed files; exit 1 listing those that differ
#   scripts/check-format.sh --all    check every file
#   scripts/check-format.sh --fix    format the changed files in place (--fix --all: every file)
set -euo pipefail
cd "$(dirname "$0")/.."
clang_format=${CLANG_FORMAT:-clang-format}
version=$("$clang_format" --version)
if [[ "$version" != *"version 14."* ]]; then
  echo "check-format: needs clang-format 14 (Debian 12's), found: $version" >&2
  exit 2
fi
fix=0 all=0
for arg in "$@"; do
  case "$arg" in
    --fix) fix=1 ;;
    --all) all=1 ;;
    *) echo "usage: scripts/check-format.sh [--fix] [--all]" >&2; exit 2 ;;
  esac
done
patterns=('*.cpp' '*.h' '*.cu' '*.cuh')
if ((all)); then
  mapfile -t files < <(git ls-files "${patterns[@]}")
else
  base=$(git log -1 --format=%H -- scripts/check-format.sh 2>/dev/null || true)
  if [[ -z "$base" ]]; then
    echo "check-format: this script is not committed yet; checking every file" >&2
    mapfile -t files < <(git ls-files "${patterns[@]}")
  else
    # Committed since the base, plus what the working tree changes.
    mapfile -t files < <({ git diff --name-only --diff-filter=d "$base" -- "${patterns[@]}"
                           git ls-files --others --exclude-standard "${patterns[@]}"; } | sort -u)
  fi
fi
if ((${#files[@]} == 0)); then
  echo "check-format: no C++ file changed since the format baseline"
  exit 0
fi
if ((fix)); then
  "$clang_format" -i "${files[@]}"
  echo "check-format: formatted ${#files[@]} files"
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
echo "check-format: ${#files[@]} changed files formatted"
