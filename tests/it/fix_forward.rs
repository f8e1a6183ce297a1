//! "Fix forward" from a high verdict, on the Slack and Discord fakes: the
//! button on the monitoring card opens a dialog for the reason, and the
//! reason lands in the thread and in the audit log.

use std::sync::{Arc, Mutex};

use tminus::chat::buttons;
use tminus::config::Config;
use tminus::domain::{Action, Platform, RoleId, RunId};
use tminus::engine::{Actor, Request};

use crate::escalation::Env;
use crate::helpers::{all_dbs, config_with};
use crate::web::{fake_prometheus, watched_runbook};

const REASON: &str = "a one-line cache fix is ready to ship";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_forward_from_a_high_verdict_asks_why_and_records_it() {
    for platform in [Platform::Slack, Platform::Discord] {
        for db in all_dbs().await {
            let kind = format!("{} on {platform}", db.kind);
            // Errors at 3% and p95 at 0.9 s: high by the runbook's matrix.
            let values = Arc::new(Mutex::new((0.03, 0.9)));
            let prometheus = fake_prometheus(values).await;
            let dir = config_with("", &[("watched", &watched_runbook(&prometheus))]);
            let config = Arc::new(Config::load(dir.path()).unwrap());
            let env = Env::start_with(db, platform, config).await;
            let answer = env
                .command(
                    "alice",
                    "deploy",
                    "start storefront v4.2.0 --runbook watched",
                )
                .await;
            assert!(answer.contains("Started deployment #1"), "{kind}: {answer}");

            // Walk to the production deploy, through the engine.
            let act = |who: &str, action: Action| {
                let actor = Actor {
                    platform,
                    user: env.platform_id(who),
                    channel: env.channels().deployments.clone(),
                };
                let id = buttons::encode(RunId(1), &action);
                let engine = env.engine.clone();
                async move {
                    let reply = engine
                        .handle(&actor, Request::click(&id, None).unwrap(), None)
                        .await;
                    assert!(!reply.refused, "{}", reply.text);
                }
            };
            let (p, q) = ("prepare".to_string(), "production".to_string());
            let item = |phase: &str, item: &str| Action::ItemDone {
                phase: phase.into(),
                item: item.into(),
            };
            let sign = |phase: &str, role: &str| Action::SignOff {
                phase: phase.into(),
                role: RoleId::new(role),
            };
            act("alice", item(&p, "tests")).await;
            act("chen", sign(&p, "qa")).await;
            act("alice", Action::Advance { phase: p }).await;
            act("alice", item(&q, "deploy")).await;
            act("emeka", sign(&q, "devops")).await;
            act("alice", Action::Advance { phase: q }).await;
            env.drain().await;

            // The first tick, five minutes after T0, is high.
            env.at_minute(5).await;
            let card = env
                .posted()
                .into_iter()
                .rfind(|p| p.buttons.iter().any(|(l, _)| l == "Fix forward"))
                .unwrap_or_else(|| panic!("{kind}: no Fix forward button was offered"));
            assert!(card.text.contains("Verdict: HIGH"), "{kind}: {}", card.text);

            env.press_with_reason("emeka", &card, "Fix forward", REASON)
                .await;
            let said = env
                .posted()
                .into_iter()
                .any(|p| p.text.contains("chose to fix forward") && p.text.contains(REASON));
            assert!(said, "{kind}: the thread is told, with the reason");
            let audit = env.engine.store().audit_for_run(RunId(1)).await.unwrap();
            let entry = audit
                .iter()
                .find(|a| a.action == "run.fix_forward")
                .unwrap_or_else(|| panic!("{kind}: no run.fix_forward in the audit log"));
            assert!(entry.detail.contains(REASON), "{kind}: {}", entry.detail);
        }
    }
}
