//! Escalation on the chat platforms with a virtual clock: the engine, the
//! Slack or Discord adapter and its outbox worker in this process, pointed at
//! the fake Slack or Discord, and the scheduler stepped minute by minute.
//! Seed 003's critical path — primary on-call at once, the backend lead at
//! 5 minutes, rollback advice at 10, the CTO at 15 — must page exactly those
//! people at exactly those minutes, by direct message and by a mention in the
//! incidents channel; an Acknowledge at minute 7 must stop it. Every page the
//! database records must arrive as its person's DM, with nothing in the
//! outbox given up — on Slack through `conversations.open` as Slack's API
//! document has it, which the fake enforces.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tminus::clock::{Clock, VirtualClock};
use tminus::config::{Config, Secret};
use tminus::delivery::Worker;
use tminus::discord::{deliver::DiscordDelivery, Discord, DiscordSettings};
use tminus::domain::{PersonId, Platform};
use tminus::engine::Engine;
use tminus::scheduler::Scheduler;
use tminus::slack::{deliver::SlackDelivery, inbound::CommandForm, Slack, SlackSettings};
use tminus::store::Store;

use crate::fake_discord::{self, FakeDiscord};
use crate::fake_slack::{self, FakeSlack};
use crate::helpers::{all_dbs, config, TestDb};

const START: &str = "2026-11-23T09:00:00Z";

pub(crate) enum Adapter {
    Slack {
        fake: FakeSlack,
        slack: Arc<Slack>,
        worker: Worker<SlackDelivery>,
    },
    Discord {
        fake: FakeDiscord,
        discord: Arc<Discord>,
        worker: Worker<DiscordDelivery>,
    },
}

/// A message the bot posted (not an edit): where, its text, its buttons.
#[derive(Clone, Debug)]
pub(crate) struct Posted {
    pub(crate) channel: String,
    pub(crate) text: String,
    pub(crate) buttons: Vec<(String, String)>,
}

impl Posted {
    /// The id of the button labelled `label`.
    fn button_id(&self, label: &str) -> String {
        self.buttons
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no {label:?} button on {self:?}"))
            .1
            .clone()
    }
}

pub(crate) struct Env {
    pub(crate) engine: Engine,
    clock: Arc<VirtualClock>,
    scheduler: Scheduler,
    pub(crate) config: Arc<Config>,
    pub(crate) adapter: Adapter,
    start: DateTime<Utc>,
    _db: TestDb,
}

impl Env {
    pub(crate) async fn start(db: TestDb, platform: Platform) -> Env {
        Env::start_with(db, platform, config()).await
    }

    /// With another configuration.
    pub(crate) async fn start_with(db: TestDb, platform: Platform, config: Arc<Config>) -> Env {
        let store = Store::connect(&db.url).await.expect("connect");
        let start: DateTime<Utc> = START.parse().unwrap();
        let clock = Arc::new(VirtualClock::new(start));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let engine = Engine::new(store, config.clone(), dyn_clock);
        let adapter = match platform {
            Platform::Slack => {
                let fake = FakeSlack::start().await;
                let settings = SlackSettings {
                    bot_token: Secret::new(fake_slack::BOT_TOKEN.into()),
                    signing_secret: None,
                    app_token: None,
                    api_url: fake.api_url(),
                };
                let slack = Slack::new(engine.clone(), settings).unwrap();
                let worker =
                    Worker::new(engine.clone(), Arc::new(SlackDelivery::new(slack.clone())));
                Adapter::Slack {
                    fake,
                    slack,
                    worker,
                }
            }
            Platform::Discord => {
                let fake = FakeDiscord::start().await;
                let settings = DiscordSettings {
                    token: Secret::new(fake_discord::TOKEN.into()),
                    public_key: None,
                    application_id: None,
                    api_url: fake.api_url(),
                };
                let discord = Discord::new(engine.clone(), settings).unwrap();
                let worker = Worker::new(
                    engine.clone(),
                    Arc::new(DiscordDelivery::new(discord.clone())),
                );
                Adapter::Discord {
                    fake,
                    discord,
                    worker,
                }
            }
            Platform::Shell => unreachable!("the shell has its own tests"),
        };
        Env {
            scheduler: Scheduler::new(engine.clone()),
            engine,
            clock,
            config,
            adapter,
            start,
            _db: db,
        }
    }

    pub(crate) fn platform_id(&self, person: &str) -> String {
        let p = &self.config.directory.people[&PersonId::new(person)];
        match self.adapter {
            Adapter::Slack { .. } => p.slack.clone().unwrap(),
            Adapter::Discord { .. } => p.discord.clone().unwrap(),
        }
    }

    pub(crate) fn channels(&self) -> &tminus::config::ChannelPair {
        let name = match self.adapter {
            Adapter::Slack { .. } => "slack",
            Adapter::Discord { .. } => "discord",
        };
        &self.config.channels[name]
    }

    /// Alice starts deployment #1 of `what` ("service version") on the
    /// go-live runbook.
    pub(crate) async fn start_go_live(&self, what: &str) {
        let answer = self
            .command(
                "alice",
                "deploy",
                &format!("start {what} --runbook go-live"),
            )
            .await;
        assert!(answer.contains("Started deployment #1"), "{answer}");
    }

    /// Type a slash command as `person`; returns what the bot answered.
    pub(crate) async fn command(&self, person: &str, name: &str, text: &str) -> String {
        let user = self.platform_id(person);
        let channel = self.channels().deployments.clone();
        let answer = match &self.adapter {
            Adapter::Slack { slack, .. } => {
                let form = CommandForm {
                    command: format!("/{name}"),
                    text: text.into(),
                    user_id: user,
                    channel_id: channel,
                    trigger_id: format!("trigger-{}", uuidish()),
                };
                slack.on_command(form).await["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }
            Adapter::Discord { discord, .. } => {
                // The gateway's path: the same interaction JSON, unsigned.
                let (sub, rest) = text.split_once(' ').unwrap_or((text, ""));
                let options = match sub {
                    "start" => {
                        let w: Vec<&str> = rest.split_whitespace().collect();
                        json!([{"type": 3, "name": "service", "value": w[0]},
                               {"type": 3, "name": "version", "value": w[1]},
                               {"type": 3, "name": "runbook", "value": w[3]}])
                    }
                    "incident" => {
                        let (summary, severity) = rest.split_once(" --severity ").unwrap();
                        json!([{"type": 3, "name": "summary", "value": summary},
                               {"type": 3, "name": "severity", "value": severity}])
                    }
                    _ => json!([]),
                };
                let data = json!({"id": "1", "name": name, "type": 1,
                                  "options": [{"type": 1, "name": sub, "options": options}]});
                let payload = interaction(&user, &channel, 2, data);
                let answer = discord.respond(payload).await.unwrap();
                fake_discord::assert_valid_answer(&answer);
                answer["data"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }
        };
        self.drain().await;
        answer
    }

    /// Press a button of a posted message as `person`; true if the bot
    /// refused, which it tells the clicker alone.
    async fn click(&self, person: &str, posted: &Posted, label: &str) -> bool {
        let id = posted.button_id(label);
        let user = self.platform_id(person);
        match &self.adapter {
            Adapter::Slack { slack, .. } => {
                let payload = slack_click(&user, &posted.channel, &id);
                let Adapter::Slack { fake, .. } = &self.adapter else {
                    unreachable!()
                };
                let before = fake.ok_calls("chat.postEphemeral").len();
                slack.on_interaction(payload).await;
                self.drain().await;
                let ephemerals = fake.ok_calls("chat.postEphemeral");
                ephemerals[before..]
                    .iter()
                    .any(|c| c.str("user") == Some(&user))
            }
            Adapter::Discord { discord, .. } => {
                let payload = discord_click(&user, &posted.channel, &id);
                let answer = discord.respond(payload).await.unwrap();
                fake_discord::assert_valid_answer(&answer);
                self.drain().await;
                // A refusal is an ephemeral reply; anything else a silent update.
                answer["type"] == 4
            }
        }
    }

    /// Press a button that asks for a reason, as `person` would: the bot
    /// opens its dialog (Slack's `views.open`, Discord's modal answer), and
    /// the person submits `reason` in it.
    pub(crate) async fn press_with_reason(
        &self,
        person: &str,
        posted: &Posted,
        label: &str,
        reason: &str,
    ) {
        let id = posted.button_id(label);
        let user = self.platform_id(person);
        match &self.adapter {
            Adapter::Slack { slack, fake, .. } => {
                let payload = slack_click(&user, &posted.channel, &id);
                assert!(slack.on_interaction(payload).await.is_none());
                let opened = fake
                    .wait_for("the reason dialog", |c| {
                        c.iter().any(|c| c.method == "views.open" && c.ok())
                    })
                    .await;
                let view = &opened
                    .iter()
                    .rfind(|c| c.method == "views.open")
                    .unwrap()
                    .body["view"];
                let view: Value = match view.as_str() {
                    Some(text) => serde_json::from_str(text).unwrap(),
                    None => view.clone(),
                };
                let submission = json!({
                    "type": "view_submission",
                    "user": {"id": user},
                    "view": {
                        "id": format!("V{}", uuidish()),
                        "callback_id": view["callback_id"],
                        "private_metadata": view["private_metadata"],
                        "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}
                    }
                });
                slack.on_interaction(submission).await;
            }
            Adapter::Discord { discord, .. } => {
                let click = discord_click(&user, &posted.channel, &id);
                let modal = discord.respond(click).await.unwrap();
                assert_eq!(modal["type"], 9, "a modal asks for the reason: {modal}");
                let input = &modal["data"]["components"][0]["components"][0];
                let submit = interaction(
                    &user,
                    &posted.channel,
                    5,
                    json!({"custom_id": modal["data"]["custom_id"], "components": [
                        {"type": 1, "components": [{"type": 4, "custom_id": input["custom_id"], "value": reason}]}
                    ]}),
                );
                let answer = discord.respond(submit).await.unwrap();
                assert_eq!(answer["type"], 6, "accepted without a refusal: {answer}");
            }
        }
        self.drain().await;
    }

    /// Deliver everything queued.
    pub(crate) async fn drain(&self) {
        loop {
            let n = match &self.adapter {
                Adapter::Slack { worker, .. } => worker.step().await.unwrap(),
                Adapter::Discord { worker, .. } => worker.step().await.unwrap(),
            };
            if n == 0 && self.engine.store().outbox_depth().await.unwrap() == 0 {
                return;
            }
        }
    }

    /// Move the clock to `minutes` after the start, fire what is due, deliver.
    pub(crate) async fn at_minute(&self, minutes: i64) -> usize {
        self.clock.set(self.start + Duration::minutes(minutes));
        let fired = self.scheduler.run_due(self.clock.now()).await.unwrap();
        self.drain().await;
        fired
    }

    /// Every message posted so far, in order.
    pub(crate) fn posted(&self) -> Vec<Posted> {
        match &self.adapter {
            Adapter::Slack { fake, .. } => fake
                .ok_calls("chat.postMessage")
                .iter()
                .map(|c| Posted {
                    channel: c.str("channel").unwrap_or_default().to_string(),
                    text: c.all_text(),
                    buttons: c.buttons(),
                })
                .collect(),
            Adapter::Discord { fake, .. } => fake
                .calls()
                .iter()
                .filter(|c| c.ok() && c.method == "POST" && c.path.ends_with("/messages"))
                .map(|c| Posted {
                    channel: c.channel().unwrap_or_default().to_string(),
                    text: c.all_text(),
                    buttons: c.buttons(),
                })
                .collect(),
        }
    }

    /// The direct-message channel the fake gives `person`.
    fn dm_channel(&self, person: &str) -> String {
        let id = self.platform_id(person);
        match self.adapter {
            Adapter::Slack { .. } => format!("D{id}"),
            Adapter::Discord { .. } => format!("9{}", &id[id.len().saturating_sub(17)..]),
        }
    }

    /// Who was paged by direct message for `incident`, in order.
    fn dm_pages(&self, incident: i64) -> Vec<(String, Posted)> {
        let marker = format!("Incident #{incident} ");
        let people: Vec<String> = self
            .config
            .directory
            .people
            .keys()
            .map(|k| k.to_string())
            .collect();
        self.posted()
            .into_iter()
            .filter(|p| p.text.contains(&marker) && p.text.contains("You are paged"))
            .map(|p| {
                let who = people
                    .iter()
                    .find(|k| self.dm_channel(k) == p.channel)
                    .unwrap_or_else(|| panic!("a page outside any direct message: {p:?}"))
                    .clone();
                (who, p)
            })
            .collect()
    }

    /// The escalation messages in the incidents channel for `incident`.
    fn channel_steps(&self, incident: i64) -> Vec<Posted> {
        let incidents = self.channels().incidents.clone();
        let marker = format!("Incident #{incident} — escalation step");
        self.posted()
            .into_iter()
            .filter(|p| p.channel == incidents && p.text.contains(&marker))
            .collect()
    }

    /// Nothing given up: no failed row in the outbox and, on Slack, no
    /// request the fake refused (its document check or Block Kit's limits).
    async fn assert_all_delivered(&self, when: &str) {
        let failed = self.engine.store().failed_messages().await.unwrap();
        assert_eq!(failed, vec![], "{when}: messages given up");
        if let Adapter::Slack { fake, .. } = &self.adapter {
            assert_eq!(fake.violations(), Vec::<String>::new(), "{when}");
        }
    }

    /// Every page the database recorded arrived as a direct message to its
    /// person, and no DM came without a page. On Slack each DM channel was
    /// opened with `users` as the string Slack's API takes.
    async fn assert_every_page_arrived(&self) {
        let mut recorded: Vec<(i64, String)> = self
            .engine
            .store()
            .all_pages()
            .await
            .unwrap()
            .into_iter()
            .map(|(incident, page)| (incident, page.person.to_string()))
            .collect();
        let incidents: std::collections::BTreeSet<i64> = recorded.iter().map(|(i, _)| *i).collect();
        let mut delivered: Vec<(i64, String)> = incidents
            .iter()
            .flat_map(|&i| self.dm_pages(i).into_iter().map(move |(who, _)| (i, who)))
            .collect();
        recorded.sort();
        delivered.sort();
        assert!(!recorded.is_empty());
        assert_eq!(delivered, recorded, "pages recorded vs DMs delivered");
        if let Adapter::Slack { fake, .. } = &self.adapter {
            let opens = fake.calls();
            let opens: Vec<_> = opens
                .iter()
                .filter(|c| c.method == "conversations.open")
                .collect();
            assert!(!opens.is_empty());
            for open in &opens {
                assert!(open.ok(), "{open:?}");
                let users = open.str("users").expect("users as a string");
                let paged = self
                    .config
                    .directory
                    .people
                    .values()
                    .any(|p| p.slack.as_deref() == Some(users));
                assert!(paged, "conversations.open for {users:?}");
            }
            // One open per person paged, remembered after that.
            let people: std::collections::BTreeSet<&String> =
                recorded.iter().map(|(_, p)| p).collect();
            assert_eq!(opens.len(), people.len(), "{opens:?}");
        }
    }

    fn mention(&self, person: &str) -> String {
        format!("<@{}>", self.platform_id(person))
    }
}

fn uuidish() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Slack's payload for a click on button `id` by `user` in `channel`.
fn slack_click(user: &str, channel: &str, id: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": channel},
        "trigger_id": format!("trigger-{}", uuidish()),
        "message": {"ts": "1.000001"},
        "actions": [{"action_id": id, "type": "button"}]
    })
}

/// Discord's interaction for a click on button `id`.
fn discord_click(user: &str, channel: &str, id: &str) -> Value {
    interaction(
        user,
        channel,
        3,
        json!({"component_type": 2, "custom_id": id}),
    )
}

fn interaction(user: &str, channel: &str, kind: u64, data: Value) -> Value {
    json!({
        "id": format!("{}", 1_300_000_000_000_000_000u64 + uuidish()),
        "application_id": fake_discord::APP_ID, "type": kind, "token": "t", "version": 1,
        "channel_id": channel, "channel": {"id": channel, "type": 0},
        "user": {"id": user, "username": "u", "discriminator": "0", "global_name": null, "avatar": null},
        "locale": "en-US", "entitlements": [], "attachment_size_limit": 8388608,
        "data": data
    })
}

/// Seed 003's path without an answer, then again with an Acknowledge at
/// minute 7, on one platform and database.
async fn seed_003_path(db: TestDb, platform: Platform) {
    let kind = db.kind;
    let env = Env::start(db, platform).await;
    let primary = env.config.rotations["primary"]
        .holder(&[], env.start)
        .person
        .to_string();
    env.start_go_live("checkout-api v3.1.0").await;

    // Nobody answers: 0, 5, 10 (advice), 15, and nothing after.
    let answer = env
        .command(
            "alice",
            "deploy",
            "incident checkout returns 500s --severity critical",
        )
        .await;
    assert!(
        answer.contains("Opened incident #1"),
        "{platform} {kind}: {answer}"
    );
    env.assert_all_delivered("the first page").await;
    let pages = env.dm_pages(1);
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert_eq!(pages[0].0, primary);
    assert!(
        pages[0]
            .1
            .buttons
            .iter()
            .any(|(l, id)| l == "Acknowledge" && id == "incident.ack:1"),
        "{:?}",
        pages[0].1
    );
    let steps = env.channel_steps(1);
    assert_eq!(steps.len(), 1);
    assert!(
        steps[0].text.contains(&env.mention(&primary)),
        "{:?}",
        steps[0]
    );

    assert_eq!(env.at_minute(4).await, 0, "nothing is due before minute 5");
    assert_eq!(env.dm_pages(1).len(), 1);
    assert_eq!(env.at_minute(5).await, 1);
    let who: Vec<String> = env.dm_pages(1).into_iter().map(|(w, _)| w).collect();
    assert_eq!(who, vec![primary.clone(), "bruno".into()]);
    assert!(env.channel_steps(1)[1].text.contains(&env.mention("bruno")));

    assert_eq!(env.at_minute(10).await, 1);
    assert_eq!(env.dm_pages(1).len(), 2, "the advice step pages nobody");
    let steps = env.channel_steps(1);
    assert_eq!(steps.len(), 3);
    assert!(
        steps[2].text.contains("roll back now") && steps[2].text.contains("step 3 of 4"),
        "{:?}",
        steps[2]
    );
    assert_eq!(env.at_minute(14).await, 0);
    assert_eq!(env.at_minute(15).await, 1);
    let who: Vec<String> = env.dm_pages(1).into_iter().map(|(w, _)| w).collect();
    assert_eq!(who, vec![primary.clone(), "bruno".into(), "zoe".into()]);
    assert!(env.channel_steps(1)[3].text.contains(&env.mention("zoe")));
    assert_eq!(
        env.at_minute(19).await,
        0,
        "the ladder ends at its last step"
    );
    assert_eq!(env.dm_pages(1).len(), 3);
    // Zoe resolves it from her direct message, with a note.
    let zoe_page = env.dm_pages(1).pop().unwrap().1;
    assert!(zoe_page.buttons.iter().any(|(l, _)| l == "Resolve"));
    let resolve = tminus::chat::buttons::incident(
        1,
        &tminus::domain::IncidentAction::Resolve {
            note: Some("rolled back".into()),
        },
    );
    let reply = env
        .engine
        .handle(
            &tminus::engine::Actor {
                platform,
                user: env.platform_id("zoe"),
                channel: zoe_page.channel.clone(),
            },
            tminus::engine::Request::click(&resolve, Some("rolled back to v3.0.9".into())).unwrap(),
            None,
        )
        .await;
    assert!(reply.changed, "{reply:?}");
    env.drain().await;

    // With an acknowledgement at minute 7 of a second incident.
    let base = 20;
    env.at_minute(base).await;
    let answer = env
        .command(
            "alice",
            "deploy",
            "incident payments time out --severity critical",
        )
        .await;
    assert!(answer.contains("Opened incident #2"), "{answer}");
    env.at_minute(base + 5).await;
    let pages = env.dm_pages(2);
    let who: Vec<&str> = pages.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(who, vec![primary.as_str(), "bruno"]);
    env.at_minute(base + 7).await;
    let bruno_page = pages[1].1.clone();
    // Someone outside the path is refused and changes nothing.
    let before = env.posted().len();
    assert!(env.click("farah", &bruno_page, "Acknowledge").await);
    assert_eq!(env.posted().len(), before, "a refused click posts nothing");
    assert!(!env.click("bruno", &bruno_page, "Acknowledge").await);
    let incidents = env.channels().incidents.clone();
    let after: Vec<Posted> = env.posted().into_iter().skip(before).collect();
    assert!(
        after.iter().any(|p| p.channel == incidents
            && p.text.contains("Bruno Ferreira acknowledged incident #2")),
        "{after:?}"
    );
    for minute in [base + 10, base + 15, base + 20] {
        env.at_minute(minute).await;
        assert_eq!(
            env.dm_pages(2).len(),
            2,
            "a page after the acknowledgement at minute {minute}"
        );
        assert_eq!(env.channel_steps(2).len(), 2);
    }
    // Go-live's acknowledgement time-out is 15 minutes: still unresolved at
    // minute 7 + 15, paging starts again from the primary.
    env.at_minute(base + 22).await;
    let who: Vec<String> = env.dm_pages(2).into_iter().map(|(w, _)| w).collect();
    assert_eq!(who, vec![primary.clone(), "bruno".into(), primary.clone()]);

    env.assert_all_delivered("the end").await;
    env.assert_every_page_arrived().await;

    let store = env.engine.store();
    let incidents = store
        .incidents_for_run(tminus::domain::RunId(1))
        .await
        .unwrap();
    assert_eq!(incidents.len(), 2);
    assert_eq!(incidents[0].0.status.as_str(), "resolved");
    assert_eq!(
        incidents[1].0.acked_by.as_ref().map(|p| p.as_str()),
        Some("bruno")
    );
    let report = env
        .engine
        .report(&store.run(tminus::domain::RunId(1)).await.unwrap().unwrap())
        .await
        .unwrap();
    assert!(report.contains("## Incidents"), "{report}");
    assert!(
        report.contains("**Acknowledged:** Bruno Ferreira"),
        "{report}"
    );
    assert!(report.contains("**Resolved:** Zoe Kowalski"), "{report}");
}

#[tokio::test]
async fn seed_003_escalation_on_slack() {
    for db in all_dbs().await {
        seed_003_path(db, Platform::Slack).await;
    }
}

#[tokio::test]
async fn seed_003_escalation_on_discord() {
    for db in all_dbs().await {
        seed_003_path(db, Platform::Discord).await;
    }
}
