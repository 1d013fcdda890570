#!/usr/bin/env bash
# Prints the Debian/Ubuntu packages that hold the shared libraries the BINARYs load, one a line:
# what the Dockerfile's runtime stage installs. Computed in the build stage, so the same
# Dockerfile works on Debian 12 and on the Ubuntu-based nvidia/cuda images, whose package names
# differ (libgrpc++1.51 vs libgrpc++1.51t64). Libraries no package owns (the CUDA driver, which
# the container runtime injects) are left out.
#   scripts/runtime-packages.sh build/server/sinkserve [build/client/sinkserve-bench ...]
set -euo pipefail
ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r library; do
  # Merged /usr: ldd may say /lib/... where dpkg recorded /usr/lib/... (or the reverse).
  dpkg -S "*${library#/usr}" 2>/dev/null | cut -d: -f1 | tr ',' '\n' | tr -d ' ' || true
done | sort -u
