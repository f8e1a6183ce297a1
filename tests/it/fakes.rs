//! One fake platform, Slack or Discord, behind one face, for tests that
//! run the same story on both: `serve`'s environment for it, what it shows
//! (every message it holds, in its place), and its faults.

use std::time::{Duration, Instant};

use tminus::domain::Platform;
use tminus::store::Store;

use crate::helpers::all_strings;
use crate::{fake_discord, fake_slack};

/// One fake platform, as the test drives it.
pub enum Fake {
    Slack(fake_slack::FakeSlack),
    Discord(fake_discord::FakeDiscord),
}

/// A message as the platform shows it: where, and all its text.
#[derive(Debug)]
pub struct Shown {
    /// The channel, and the thread (Slack's `thread_ts`; a Discord thread
    /// is a channel of its own).
    pub place: (String, Option<String>),
    pub text: String,
}

impl Fake {
    pub async fn start(platform: Platform) -> Fake {
        match platform {
            Platform::Slack => Fake::Slack(fake_slack::FakeSlack::start().await),
            _ => Fake::Discord(fake_discord::FakeDiscord::start().await),
        }
    }

    /// `serve`'s environment for this platform; a dead process's claims
    /// pass on after two seconds.
    pub fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut env = match self {
            Fake::Slack(f) => vec![
                ("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN.to_string()),
                ("SLACK_SIGNING_SECRET", "exactly-once-secret".to_string()),
                ("SLACK_API_URL", f.api_url()),
            ],
            Fake::Discord(f) => vec![
                ("DISCORD_TOKEN", fake_discord::TOKEN.to_string()),
                ("DISCORD_PUBLIC_KEY", discord_public_key()),
                ("DISCORD_APPLICATION_ID", fake_discord::APP_ID.to_string()),
                ("DISCORD_API_URL", f.api_url()),
            ],
        };
        env.push(("TMINUS_LEASE", "2s".to_string()));
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    }

    /// Wait until the process is up with the platform (Discord: its
    /// commands registered), so a fault meant for a message meets it.
    pub async fn ready(&self) {
        if let Fake::Discord(f) = self {
            f.wait_for("the commands registered", |c| {
                c.iter().any(|c| c.ok() && c.path.ends_with("/commands"))
            })
            .await;
        }
    }

    pub fn hold_posts(&self, hold: Option<Duration>) {
        match self {
            Fake::Slack(f) => f.hold_posts(hold),
            Fake::Discord(f) => f.hold_posts(hold),
        }
    }

    pub fn held(&self) -> usize {
        match self {
            Fake::Slack(f) => f.held(),
            Fake::Discord(f) => f.held(),
        }
    }

    /// A call takes effect and its answer is a 500.
    pub fn applied_then_500(&self) {
        match self {
            Fake::Slack(f) => f.fail_next([fake_slack::Fault::AppliedThen(500)]),
            Fake::Discord(f) => f.fail_next([fake_discord::Fault::AppliedThen(500)]),
        }
    }

    /// Every message the platform holds, whether or not the bot saw the answer.
    pub fn shown(&self) -> Vec<Shown> {
        match self {
            Fake::Slack(f) => f
                .messages()
                .into_iter()
                .map(|m| Shown {
                    place: (m.channel, m.thread_ts),
                    text: all_strings(&m.text),
                })
                .collect(),
            Fake::Discord(f) => f
                .messages()
                .into_iter()
                .map(|m| Shown {
                    place: (m.channel, None),
                    text: all_strings(&m.content),
                })
                .collect(),
        }
    }

    /// Proof that the settling path ran: Slack read the conversations with
    /// metadata; Discord was sent a nonce it had seen.
    pub fn lookups(&self) -> usize {
        match self {
            Fake::Slack(f) => f
                .calls()
                .iter()
                .filter(|c| {
                    c.ok()
                        && matches!(
                            c.method.as_str(),
                            "conversations.history" | "conversations.replies"
                        )
                        && c.str("include_all_metadata") == Some("true")
                })
                .count(),
            Fake::Discord(f) => {
                let mut seen = std::collections::HashSet::new();
                f.calls()
                    .iter()
                    .filter(|c| c.method == "POST" && c.body["enforce_nonce"] == true)
                    .filter_map(|c| c.body["nonce"].as_str().map(str::to_string))
                    .filter(|n| !seen.insert(n.clone()))
                    .count()
            }
        }
    }
}

/// Any valid Ed25519 public key: this test sends no interactions.
pub fn discord_public_key() -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    tminus::hex::encode(key.verifying_key().as_bytes())
}

/// Wait until nothing is left to deliver; nothing may have failed.
pub async fn drained(store: &Store, what: &str) {
    let start = Instant::now();
    while store.outbox_depth().await.unwrap() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "{what}: the outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.failed_messages().await.unwrap(), vec![], "{what}");
}

pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
