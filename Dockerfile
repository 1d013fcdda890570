# sinkserve image. Today it carries the offline `sinkserve` program; the gRPC server, the
# CUDA build stage and the health check arrive with the server and deploy issues.
#   docker build -t sinkserve .
#   docker run --rm sinkserve generate --prompt "Hello"              # built-in demo model
#   docker run --rm -v /models:/models sinkserve perplexity --model /models/pythia-160m ...
ARG BASE_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN scripts/install-deps.sh
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DSINKSERVE_BUILD_TESTS=OFF -DSINKSERVE_BUILD_BENCHMARKS=OFF \
 && cmake --build /build --target sinkserve

FROM ${RUNTIME_IMAGE}
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      $(apt-cache search --names-only '^libabsl[0-9]+$' | cut -d' ' -f1) \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 sinkserve
COPY --from=build /build/server/sinkserve /usr/local/bin/sinkserve
USER sinkserve
VOLUME /models
ENTRYPOINT ["/usr/local/bin/sinkserve"]
CMD ["generate", "--prompt", "The attention sink is", "--max-new-tokens", "64"]
