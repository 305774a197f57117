# syntax=docker/dockerfile:1
# Build:  docker build -t cronsumer .
# Run:    docker run --env-file .env -p 8080:8080 cronsumer

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
# Listen on all interfaces inside the container (the default is 127.0.0.1).
ENV HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["cronsumer"]
CMD ["run"]
