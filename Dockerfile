# syntax=docker/dockerfile:1
# The oam-trust image the Helm chart references (charts/oam-trust, image.repository).
# Not built in CI here (no container engine in the test environment); build it with
#   docker build -t ghcr.io/oam-trust/oam-trust:0.1.0 .
# Builder: the pinned Rust toolchain (rust-version in Cargo.toml). ring needs a C compiler, which
# the Debian-based image has.
FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin oam-trust \
 && install -D -m 0755 target/release/oam-trust /out/oam-trust

# Runtime: glibc + libgcc, no shell, no package manager, runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/oam-trust /usr/local/bin/oam-trust
USER 65532:65532
# 8081: /livez, /readyz, /metrics. 8443: token exchange (HTTPS).
EXPOSE 8081 8443
ENTRYPOINT ["/usr/local/bin/oam-trust"]
CMD ["run"]
