//! tminus: a chat-ops bot that runs a team's deployment playbook in Slack,
//! Discord or a terminal.
//!
//! - [`app`]: wires configuration, store, engine, scheduler and adapters into `serve` and `shell`.
//! - [`chat`]: platform-neutral cards, buttons (ids and their parsing) and outgoing messages.
//! - [`cli`]: the command line (`main.rs` calls [`cli::main`]).
//! - [`clock`]: the injected clock: system time in production, virtual in tests and the shell.
//! - [`config`]: loads and checks `bot-config/` (bot file and runbooks), errors by file:line:key.
//! - [`delivery`]: the outbox worker every platform shares: claim, deliver, retry, give up.
//! - [`discord`]: the Discord adapter (serenity): interactions endpoint, gateway, delivery.
//! - [`doctor`]: `tminus doctor`: checks a real set-up and prints the fix for each failure.
//! - [`domain`]: runbooks, people, roles, rotations and the run state machine; pure.
//! - [`engine`]: the one service every adapter calls: command in, committed state and effects out.
//! - [`hex`]: hex for signatures and keys.
//! - [`metrics`]: the counters and histograms `GET /metrics` reports.
//! - [`monitor`]: probes: HTTP health checks and Prometheus queries.
//! - [`scheduler`]: durable timers claimed from the database and fired exactly once.
//! - [`settings`]: the environment, read once at start into one value.
//! - [`shell`]: the terminal adapter behind `tminus shell`.
//! - [`store`]: SQLite and PostgreSQL: runs, audit log, outbox, timers.
//! - [`web`]: the axum router: health, readiness, metrics, run pages, the API (platform endpoints join it).
//! - [`webhooks`]: signed events out to subscribed endpoints (Standard Webhooks), through the outbox.
pub mod app;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod discord;
pub mod doctor;
pub mod domain;
pub mod engine;
pub mod hex;
pub mod metrics;
pub mod monitor;
pub mod scheduler;
pub mod settings;
pub mod shell;
pub mod slack;
pub mod store;
pub mod web;
pub mod webhooks;
