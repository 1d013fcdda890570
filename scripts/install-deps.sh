#!/usr/bin/env bash
# Installs the Debian 12 packages sinkserve builds and tests with. Idempotent: does nothing
# when everything is already installed. Run as root (or with sudo available).
#   scripts/install-deps.sh          build and test (what scripts/test.sh needs)
#   scripts/install-deps.sh build    building `sinkserve` only (the Dockerfile's build stage)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev nlohmann-json3-dev libspdlog-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc   # the gRPC server
  prometheus-cpp-dev   # the server's /metrics
  libminizip-dev       # pytorch_model.bin (a torch.save zip) without Python
  libcpp-httplib-dev   # the OpenAI-compatible HTTP/SSE API (links libssl3 for its TLS)
  libcurl4-openssl-dev # sinkserve-bench --api openai
)
if [[ "${1:-}" != build ]]; then
  packages+=(
    prometheus           # tests/server, tests/deploy: a real Prometheus scrapes the server
    libgtest-dev libgmock-dev libbenchmark-dev
    clang lld            # libFuzzer targets (tests/fuzz)
    python3-venv         # tests/deploy: grafana-foundation-sdk, kubernetes-validate, compose
    nginx-light          # tests/deploy: replicas behind grpc_pass with consistent hashing
    openssl              # tests/deploy: the certificate of nginx's TLS listener
    podman buildah debootstrap   # tests/deploy: the image built daemonless (SINKSERVE_IMAGE_TEST=1)
  )
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "sinkserve: installing ${missing[*]}" >&2
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
