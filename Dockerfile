# kubecensus: one image with both binaries, `scheduler` and `worker`, in /usr/local/bin.
# The manifests (deploy/kubernetes) run `scheduler run` and `worker` from it, as UID 65532.
#
#   make image                          # docker or podman, tag kubecensus:<version>
#   docker build -t kubecensus:dev .    # the same by hand
#
# Untested on the machines kubecensus is developed on: they have no container daemon and no
# base images (the README says so). What the image holds is what the manifests expect: the two
# binaries on PATH, CA certificates, a non-root user, no shell.

# Build: the workspace's toolchain (edition 2024, let chains: Rust 1.88 or later).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cargo's registry and the target folder are cache mounts (BuildKit), so a rebuild after a
# source change compiles only the workspace. The binaries are copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin scheduler --bin worker \
    && mkdir -p /out \
    && cp target/release/scheduler target/release/worker /out/

# Runtime: glibc, libgcc, CA certificates (/etc/ssl/certs), tzdata, and the `nonroot` user
# (UID and GID 65532); no shell, no package manager. The binaries link only glibc and libgcc
# (rustls, no OpenSSL).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/scheduler /out/worker /usr/local/bin/
USER 65532:65532
# The admin endpoint (/livez, /readyz, /metrics) the manifests turn on with KUBECENSUS_ADMIN_ADDR.
EXPOSE 9090
# `docker run kubecensus worker` or `docker run kubecensus scheduler run`; no entrypoint, so the
# manifests' `command` names the binary.
CMD ["worker"]
