//! The integration tests: one binary, one file per area, helpers shared.
//! They run the real `tminus` binary and the real databases: a fresh SQLite
//! file per test, and a fresh PostgreSQL database per test when
//! `TEST_DATABASE_URL` is set (CI sets it and fails if it is unreachable).

mod api;
mod check_config;
mod checks;
mod container;
mod discord;
mod doctor;
mod escalation;
mod exactly_once;
mod fake_discord;
mod fake_slack;
mod fakes;
mod fix_forward;
mod group_commit;
mod helpers;
mod manifest;
mod monitoring;
mod oncall;
mod openapi;
mod pipelines;
mod prometheus;
mod report;
mod restart;
mod serve;
mod shell;
mod slack;
mod slack_socket;
mod store;
mod versions;
mod web;
mod webhooks;
