# sinkserve image: the gRPC server (default command: serve the built-in demo model on :50051,
# metrics on :9464) and the offline subcommands. The CUDA build stage and the health check
# arrive with the deploy issue.
#   docker build -t sinkserve .
#   docker run --rm -p 50051:50051 -p 9464:9464 sinkserve           # built-in demo model
#   docker run --rm -p 50051:50051 -v /models:/models sinkserve serve --model /models/pythia-160m
#   docker run --rm sinkserve generate --prompt "Hello"
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
      libgrpc++1.51 libprotobuf32 libprometheus-cpp-pull1.0 libspdlog1.10 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 sinkserve
COPY --from=build /build/server/sinkserve /usr/local/bin/sinkserve
USER sinkserve
VOLUME /models
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/sinkserve"]
CMD ["serve"]
