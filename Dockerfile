# podmortem's container image: one statically linked binary on an empty base. No shell, no
# package manager, no libc to patch; the image holds /usr/bin/podmortem and nothing else.
#
#   docker build -t podmortem:0.1.0 .
#       compiles the agent in a Rust builder stage (needs a registry for rust:*-bookworm)
#   make image
#       offline: builds the binary on this machine, then this same Dockerfile with
#       --build-arg BINARY=prebuilt, so only the empty runtime stage is assembled
#
# The binary is linked statically against glibc (crt-static): it needs no loader at run time,
# and names still resolve from /etc/hosts and /etc/resolv.conf, which the runtime mounts in.

ARG RUST_VERSION=1.89
# Where the binary comes from: `compiled` (the builder stage below) or `prebuilt`
# (target/image/podmortem from the build context, as `make image` leaves it).
ARG BINARY=compiled

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS compiled
# protoc for the CRI and containerd protos; clang for the eBPF program.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --locked --profile dist -p podmortem --target "$(uname -m)-unknown-linux-gnu" \
 && mkdir -p /out \
 && cp "target/$(uname -m)-unknown-linux-gnu/dist/podmortem" /out/podmortem

FROM scratch AS prebuilt
COPY target/image/podmortem /out/podmortem

FROM ${BINARY} AS binary

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="podmortem" \
      org.opencontainers.image.description="A Kubernetes node agent that explains why pods crash, from the node's own evidence" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/podmortem/podmortem" \
      org.opencontainers.image.url="https://github.com/podmortem/podmortem" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /out/podmortem /usr/bin/podmortem
# Non-root by default, so that `podmortem check-config` or `--help` run with no privilege.
# The DaemonSet runs the agent as uid 0 with every capability dropped but the few it needs:
# Kubernetes grants added capabilities to uid 0 only (a non-root process loses them at exec).
USER 65532:65532
ENTRYPOINT ["/usr/bin/podmortem"]
CMD ["run"]
