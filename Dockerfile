# syntax=docker/dockerfile:1
#
# torii's container image (README.md: "Container image").
#
#   docker build -t torii:0.1.0 .                               # the proxy (default target)
#   docker build --target sidecar-init -t torii-init:0.1.0 .    # the iptables init container of a sidecar
#
# The proxy runs from a distroless base as a non-root user: no shell, no
# package manager, nothing written to disk (logs go to stdout and stderr),
# so the root filesystem can be mounted read-only. The configuration is a
# mounted file, /etc/torii/torii.yaml by default (deploy/kubernetes mounts
# a ConfigMap there).

ARG RUST_VERSION=1.89

# --- build: the release binary, exactly the versions in Cargo.lock ---------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# build.rs compiles proto/echo.proto with a vendored protoc: nothing else
# to install. .dockerignore keeps tests, benches and docs out of the context.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin torii \
    && cp target/release/torii /torii

# --- sidecar-init: the init container that installs the iptables REDIRECT
# rules of a transparent sidecar (docs/sidecar.md). It needs NET_ADMIN and
# NET_RAW, runs once as root before the pod's other containers, and exits.
# Debian's iptables writes nf_tables rules; on a node whose kernel lacks
# nf_tables, switch it to iptables-legacy (update-alternatives).
FROM debian:bookworm-slim AS sidecar-init
# Debian's security updates move iptables' exact version; the release is
# pinned by the base image tag instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/sidecar-iptables.sh /usr/local/bin/sidecar-iptables.sh
ENTRYPOINT ["/usr/local/bin/sidecar-iptables.sh"]
CMD ["--uid", "1337", "--proxy-port", "15001"]

# --- runtime (the default target): the proxy alone ---------------------------
# distroless/cc has glibc and libgcc, which the binary links against, plus
# CA certificates and tzdata; :nonroot runs as uid 65532 by default.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /torii /torii
USER 65532:65532
# The ports of deploy/kubernetes/base/torii.yaml: the edge listener
# (gRPC over h2c, gRPC-Web, HTTP/1.1) and the admin listener (/live, /ready,
# /metrics). A sidecar also listens on 15001 (outbound) and 15006 (inbound).
EXPOSE 8080 9901
ENTRYPOINT ["/torii"]
CMD ["serve", "-c", "/etc/torii/torii.yaml"]
