# tminus in a container: the release binary built in one stage, run as a
# non-root user in a slim one, with a health check on /readyz.
#
#   docker build -t tminus .
#   docker run -p 3000:3000 -e SLACK_BOT_TOKEN -e SLACK_SIGNING_SECRET tminus
#
# (`-e NAME` passes the variable from your environment, so the secret stays
# out of the shell's history.)
#
# compose.yaml runs two replicas on one PostgreSQL.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Exactly what `cargo build --release --bin tminus` reads: the manifest and
# lock file, the library and the binary (src/), and the migrations the
# binary embeds. tests/it/container.rs checks this list against Cargo.toml's
# targets and every file the code includes.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin tminus

FROM debian:bookworm-slim
# CA certificates for HTTPS to Slack, Discord and monitored services.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tminus \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/tminus tminus
COPY --from=build /src/target/release/tminus /usr/local/bin/tminus
COPY bot-config /etc/tminus/bot-config
USER 10001:10001
WORKDIR /var/lib/tminus
ENV DATABASE_URL=sqlite:///var/lib/tminus/tminus.db \
    TMINUS_LISTEN=0.0.0.0:3000
VOLUME /var/lib/tminus
EXPOSE 3000
# Ready: the database answers and the scheduler and outbox workers run.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["tminus", "healthcheck"]
ENTRYPOINT ["tminus"]
CMD ["serve", "--config", "/etc/tminus/bot-config"]
