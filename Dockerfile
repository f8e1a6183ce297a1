# Build the release binary in one stage, run it as a non-root user in a slim one.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked && strip target/release/tminus

FROM debian:bookworm-slim
# CA certificates for HTTPS to Slack, Discord and monitored services.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/tminus tminus
COPY --from=build /src/target/release/tminus /usr/local/bin/tminus
COPY bot-config /etc/tminus/bot-config
USER tminus
WORKDIR /var/lib/tminus
ENV DATABASE_URL=sqlite:///var/lib/tminus/tminus.db \
    TMINUS_LISTEN=0.0.0.0:3000
EXPOSE 3000
ENTRYPOINT ["tminus"]
CMD ["serve", "--config", "/etc/tminus/bot-config"]
