//! tminus: a chat-ops bot that runs a team's deployment playbook in Slack,
//! Discord or a terminal.
//!
//! - [`chat`]: platform-neutral cards, buttons and outgoing messages.
//! - [`config`]: loads and checks `bot-config/` (bot file and runbooks).
//! - [`domain`]: runbooks, people, roles and the run state machine; pure.
pub mod chat;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engine;
pub mod scheduler;
pub mod shell;
pub mod store;
