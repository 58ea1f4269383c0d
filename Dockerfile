# syntax=docker/dockerfile:1
# LedgerFlow: one image, one binary (`ledgerflow`); the subcommand picks the role:
#   docker run IMAGE gateway     (default: HTTP API on $LEDGERFLOW_HTTP_ADDR, port 8080)
#   docker run IMAGE worker
# Build from the workspace root:  docker build -t ledgerflow .

# ---------------------------------------------------------------- builder
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crates.io registry and target/ between builds;
# target/ is a cache mount, so the binary is copied out to /out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ledgerflow \
 && install -D -m 0755 target/release/ledgerflow /out/ledgerflow

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 ledgerflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin ledgerflow
COPY --from=builder /out/ledgerflow /usr/local/bin/ledgerflow
USER 10001:10001
ENV LEDGERFLOW_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["ledgerflow"]
CMD ["gateway"]
