# event-booking: build with the Rust image, run on the same Debian release
# (so the binary's glibc is there), as a non-root user, with the database on
# the /data volume. Build: docker build -t event-booking .  Run: see compose.yaml.

# cargo-chef splits the build: the dependencies (most of the build time) are a
# layer of their own, rebuilt only when Cargo.toml or Cargo.lock change.
FROM rust:1.95-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json --bin event-booking
COPY . .
RUN cargo build --release --locked --bin event-booking

FROM debian:bookworm-slim AS runtime
# The whole folder is the volume: WAL mode keeps -wal and -shm files beside the database.
RUN groupadd --system --gid 10001 booking \
    && useradd --system --uid 10001 --gid booking --no-create-home --shell /usr/sbin/nologin booking \
    && mkdir /data \
    && chown booking:booking /data
COPY --from=builder /app/target/release/event-booking /usr/local/bin/event-booking
# Every setting is a BOOKING_* variable (config/default.toml lists them); these
# differ from the defaults: every interface, and the database on the volume.
ENV BOOKING_HOST=0.0.0.0 \
    BOOKING_PORT=3000 \
    BOOKING_DATABASE=/data/bookings.db
VOLUME ["/data"]
EXPOSE 3000
# Numeric, so that orchestrators can check it is not root (runAsNonRoot).
USER 10001:10001
# SIGTERM stops gracefully: requests in flight finish and every acknowledged
# booking is flushed within shutdown_timeout_secs (8), inside Docker's 10 s.
STOPSIGNAL SIGTERM
# No curl in the image: the binary checks its own /health.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["event-booking", "healthcheck"]
ENTRYPOINT ["event-booking"]
CMD ["serve"]
