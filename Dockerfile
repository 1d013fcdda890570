# sinkserve image: the gRPC server (default command: serve the built-in demo model on :50051,
# metrics on :9464), the offline subcommands, and the load generator sinkserve-bench (to measure
# a deployment from inside its network). Two stages: build (compilers, -dev packages, and the
# CUDA toolkit when BASE_IMAGE has one) → runtime (the programs and the shared libraries they
# load, nothing else).
#
# CPU-only image (the defaults; tests/deploy/image_test.sh builds it with podman):
#   docker build -t sinkserve:cpu .
# CUDA image: nvcc in the build stage turns SINKSERVE_WITH_CUDA on (kernels for sm_80/86/89/90);
# cuBLASLt is dlopen'ed at run time, and the nvidia/cuda *runtime* images carry libcublasLt.so.13:
#   docker build -t sinkserve:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-devel-ubuntu24.04 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04 .
# BASE_IMAGE and RUNTIME_IMAGE must be the same distribution release: the runtime stage installs
# the packages that own the build stage's libraries (scripts/runtime-packages.sh).
#
#   docker run --rm -p 50051:50051 -p 9464:9464 sinkserve:cpu          # built-in demo model
#   docker run --rm --gpus all -p 50051:50051 -p 9464:9464 -v "$PWD/models:/models:ro" \
#     sinkserve:cuda serve --model /models/pythia-160m --backend cuda
#   docker run --rm sinkserve:cpu generate --prompt "Hello"
#   docker run --rm --entrypoint sinkserve-bench sinkserve:cpu load --target HOST:50051 ...
# Under TLS (serve --tls-cert/--tls-key), mount the CA and tell the HEALTHCHECK where it is:
#   -e SINKSERVE_TLS_CA=/certs/ca.pem, and -e SINKSERVE_TLS_SERVER_NAME=<the certificate's
#   name> unless the certificate names 127.0.0.1.
ARG BASE_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN scripts/install-deps.sh build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DSINKSERVE_BUILD_TESTS=OFF -DSINKSERVE_BUILD_BENCHMARKS=OFF \
 && cmake --build /build --target sinkserve sinkserve-bench \
 && scripts/runtime-packages.sh /build/server/sinkserve /build/client/sinkserve-bench \
      > /build/runtime-packages

FROM ${RUNTIME_IMAGE}
COPY --from=build /build/runtime-packages /tmp/runtime-packages
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sinkserve \
 && mkdir -p /models /var/lib/sinkserve/sessions \
 && chown 10001:10001 /var/lib/sinkserve/sessions
COPY --from=build /build/server/sinkserve /build/client/sinkserve-bench /usr/local/bin/
USER 10001:10001
# Checkpoints (read-only is enough): --model /models/<name>.
VOLUME /models
# 50051: gRPC (sinkserve.v1, grpc.health.v1, reflection); 9464: Prometheus /metrics;
# 8000: the OpenAI-compatible HTTP API.
EXPOSE 50051 9464 8000
# The model loads after the ports bind (health NOT_SERVING until then): allow for a large one.
# Plaintext by default; under TLS `sinkserve health` reads SINKSERVE_TLS_CA (and
# SINKSERVE_TLS_SERVER_NAME) from the environment.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["/usr/local/bin/sinkserve", "health", "--address", "127.0.0.1:50051"]
# SIGTERM drains (health NOT_SERVING, in-flight requests get --grace-period-s, 20 s); give
# `docker stop` more than that: docker stop -t 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sinkserve"]
CMD ["serve"]
