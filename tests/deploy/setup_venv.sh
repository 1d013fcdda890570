#!/usr/bin/env bash
# Creates (or updates) the deploy tests' Python venv: tests/deploy/setup_venv.sh VENV_DIR.
# Idempotent: does nothing when the venv already holds requirements.txt as it is now.
set -euo pipefail
venv=$1
requirements="$(dirname "$0")/requirements.txt"
if [[ -f "$venv/requirements.txt" ]] && cmp -s "$requirements" "$venv/requirements.txt"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$venv/requirements.txt"
