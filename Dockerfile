# syntax=docker/dockerfile:1
# Build:  docker build -t cronsumer .
# Run:    docker run --env-file .env -p 8080:8080 -v cronsumer-data:/app/data cronsumer
#
# What .env must NOT override inside a container (--env-file wins over the ENV
# below; .env.example leaves both of the first two commented out):
# - HTTP_ADDR must stay 0.0.0.0:8080: with 127.0.0.1:8080 the service listens
#   on the container's own loopback and -p 8080:8080 reaches nothing (the web
#   console at /, /healthz, /readyz, /metrics).
# - KAFKA_BOOTSTRAP_SERVERS must not be localhost: inside a container that is
#   the container itself. Use the broker's name on a shared network (kafka:29092
#   in docker-compose.yml) or a real host name.
# - DATABASE_URL, for SQLite, must point under /app/data (the volume), or the
#   database is lost with the container; PostgreSQL URLs are fine.
# Values in the env file are never quoted: docker run --env-file keeps quotes.

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY consumers ./consumers
COPY jobs ./jobs
COPY migrations ./migrations
# Cargo.toml declares the bench target bench/pipeline.rs; cargo refuses a
# manifest whose declared target file is missing, even for `cargo build`.
COPY bench ./bench
RUN cargo build --release --locked \
 && cp target/release/cronsumer /cronsumer

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system cronsumer \
 && useradd --system --gid cronsumer --home-dir /app --shell /usr/sbin/nologin cronsumer \
 && mkdir -p /app/data \
 && chown -R cronsumer:cronsumer /app
COPY --from=builder /cronsumer /usr/local/bin/cronsumer
WORKDIR /app
USER cronsumer
# Listen on all interfaces inside the container (the service's default is
# 127.0.0.1); keep SQLite on the volume.
ENV HTTP_ADDR=0.0.0.0:8080 DATABASE_URL=/app/data/cronsumer.db
VOLUME /app/data
EXPOSE 8080
# `cronsumer healthcheck` exits 0 when /healthz answers 200, else 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["cronsumer", "healthcheck"]
ENTRYPOINT ["cronsumer"]
CMD ["run"]
