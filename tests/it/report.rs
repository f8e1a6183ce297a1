//! `/deploy report` on Slack and Discord gives the whole report, however
//! long: a run with a timeline of a few hundred entries has a report of
//! more than 20,000 characters, far over what one answer or one message can
//! hold, and every line of it must reach the person who asked.

use tminus::chat::buttons;
use tminus::domain::{Action, Platform, RunId};
use tminus::engine::{Actor, Request};

use crate::escalation::{Adapter, Env};
use crate::helpers::all_dbs;

/// What the bot posted as direct messages with the report in them.
fn report_parts(env: &Env) -> Vec<String> {
    let texts: Vec<String> = match &env.adapter {
        Adapter::Slack { fake, .. } => fake
            .ok_calls("chat.postMessage")
            .iter()
            .filter(|c| c.str("channel").is_some_and(|ch| ch.starts_with('D')))
            .map(|c| c.all_text())
            .collect(),
        Adapter::Discord { fake, .. } => fake
            .calls()
            .iter()
            .filter(|c| c.ok() && c.method == "POST" && c.path.ends_with("/messages"))
            .map(|c| c.all_text())
            .collect(),
    };
    texts
        .into_iter()
        .filter(|t| t.contains("Deployment report —"))
        .collect()
}

/// Undo what each platform's escaping did to the text.
fn plain(text: &str) -> String {
    text.replace('\\', "")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_longer_than_any_message_arrives_whole() {
    for platform in [Platform::Slack, Platform::Discord] {
        for db in all_dbs().await {
            let kind = format!("{} on {platform}", db.kind);
            let env = Env::start(db, platform).await;
            env.start_go_live("storefront v9.1.0").await;
            let runbook = &env.config.runbooks["go-live"];
            let (phase, item) = (&runbook.phases[0].id, &runbook.phases[0].items[0].id);
            let actor = Actor {
                platform,
                user: env.platform_id("alice"),
                channel: env.channels().deployments.clone(),
            };
            for n in 0..240 {
                let action = if n % 2 == 0 {
                    Action::ItemDone {
                        phase: phase.clone(),
                        item: item.clone(),
                    }
                } else {
                    Action::ItemUndo {
                        phase: phase.clone(),
                        item: item.clone(),
                    }
                };
                let click = Request::click(&buttons::encode(RunId(1), &action), None).unwrap();
                let reply = env.engine.handle(&actor, click, None).await;
                assert!(reply.changed, "{kind}: {}", reply.text);
            }
            env.drain().await;
            let run = env.engine.store().run(RunId(1)).await.unwrap().unwrap();
            let md = env.engine.report(&run).await.unwrap();
            assert!(md.chars().count() > 20_000, "{kind}: {} chars", md.len());

            let answer = env.command("alice", "deploy", "report").await;
            assert!(
                answer.contains("on its way to you by direct message"),
                "{kind}: {answer}"
            );
            let parts = report_parts(&env);
            if platform == Platform::Discord {
                // 6,000 characters a message: the report takes several.
                assert!(parts.len() > 3, "{kind}: {} parts", parts.len());
            }
            let got = plain(&parts.join("\n"));
            for line in md.lines().map(str::trim).filter(|l| !l.is_empty()) {
                assert!(got.contains(line), "{kind}: the report lost {line:?}");
            }
            for heading in ["## Timeline", "## Sign-offs"] {
                if md.contains(heading) {
                    assert!(got.contains(heading), "{kind}: {heading}");
                }
            }
        }
    }
}
