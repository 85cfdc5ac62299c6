# syntax=docker/dockerfile:1
# heartbeat-server: a multi-stage build. The runtime image holds the binary only, runs
# as an unprivileged user, keeps sled's data in a volume and checks /healthz.
#
#   docker build -t heartbeat .
#   docker run -p 3000:3000 -e SHARED_KEY=… -e ADMIN_KEY=… -v heartbeat-data:/var/lib/heartbeat heartbeat

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
# git: the build records the commit it is built from (--version, heartbeat_build_info).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.* \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p heartbeat-http --bin heartbeat-server \
    && cp target/release/heartbeat-server /heartbeat-server

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311* curl=7.88.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 heartbeat \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/heartbeat --create-home heartbeat
COPY --from=build /heartbeat-server /usr/local/bin/heartbeat-server
USER 10001:10001
WORKDIR /var/lib/heartbeat
ENV HOST=0.0.0.0 \
    PORT=3000 \
    SLED_PATH=/var/lib/heartbeat/heartbeat.sled \
    LOG_FORMAT=json
VOLUME ["/var/lib/heartbeat"]
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:3000/healthz"]
ENTRYPOINT ["/usr/local/bin/heartbeat-server"]
