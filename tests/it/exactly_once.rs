//! Exactly once, also when a process dies in the middle of a platform call:
//! the real `tminus serve` delivering to a fake Slack or Discord that holds
//! its answers (each message is in the channel at once, its answer comes
//! late), killed with SIGKILL while several calls are in flight, then
//! started again. Every message arrives and none twice — channel messages,
//! thread replies and direct messages — because Slack posts are looked for
//! by their metadata and Discord posts carry a nonce Discord enforces.
//! Also: an answer lost to a server error, and Slack without the history
//! scopes (said once in the log; posted again, as the log warns).

use std::time::Duration;

use tminus::chat::{Card, Destination, Outgoing};
use tminus::domain::{PersonId, Platform};
use tminus::store::Store;

use crate::fake_slack;
use crate::fakes::{drained, wait_until, Fake, Shown};
use crate::helpers::{all_dbs, config, sqlite_db, ServeProcess, TestDb};

fn message(platform: Platform, to: Destination, key: Option<&str>, title: &str) -> Outgoing {
    Outgoing {
        platform,
        to,
        key: key.map(str::to_string),
        card: Card::new(title),
    }
}

async fn enqueue(store: &Store, messages: &[Outgoing]) {
    let mut tx = store.begin().await.unwrap();
    for m in messages {
        tx.enqueue(None, m, chrono::Utc::now()).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// One figure of `/metrics`.
async fn metric(serve: &ServeProcess, line_start: &str) -> u64 {
    let text = reqwest::get(serve.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics:\n{text}"))
}

/// The messages that carry `title`.
fn with_title<'a>(shown: &'a [Shown], title: &str) -> Vec<&'a Shown> {
    shown.iter().filter(|m| m.text.contains(title)).collect()
}

async fn killed_mid_call_then_restarted(platform: Platform, db: TestDb) {
    let what = format!("{platform} on {}", db.kind);
    let config = config();
    let channels = &config.channels[platform.as_str()];
    let fake = Fake::start(platform).await;
    let mut first = ServeProcess::start(&db.url, &fake.env(&[]));
    fake.ready().await;
    let store = Store::connect(&db.url).await.unwrap();

    // A thread's first message, posted and answered before the trouble.
    let root_key = "exactly-once:root";
    let channel = |c: &str| Destination::Channel { channel: c.into() };
    enqueue(
        &store,
        &[message(
            platform,
            channel(&channels.deployments),
            Some(root_key),
            "Root of the thread",
        )],
    )
    .await;
    drained(&store, &what).await;
    let (root_ref, _) = store.message_ref(root_key).await.unwrap().unwrap();

    // Now every answer is held: the first message of each lane goes out
    // (it is in the channel at once) and waits for its answer.
    fake.hold_posts(Some(Duration::from_secs(8)));
    let people = ["chen", "emeka", "farah"];
    let mut batch = Vec::new();
    for n in 1..=3 {
        batch.push(message(
            platform,
            channel(&channels.incidents),
            None,
            &format!("Channel message {n}"),
        ));
        batch.push(message(
            platform,
            Destination::Thread {
                channel: channels.deployments.clone(),
                root: root_key.into(),
            },
            None,
            &format!("Thread reply {n}"),
        ));
    }
    for person in people {
        for n in 1..=2 {
            batch.push(message(
                platform,
                Destination::Direct {
                    person: PersonId::new(person),
                },
                Some(&format!("exactly-once:dm:{person}:{n}")),
                &format!("Direct message {n} to {person}"),
            ));
        }
    }
    enqueue(&store, &batch).await;
    // One head per lane in flight: the incidents channel, the thread, and
    // the three people's direct messages.
    wait_until(&format!("{what}: five calls in flight"), || {
        fake.held() >= 5
    })
    .await;
    first.kill();
    fake.hold_posts(None);

    let second = ServeProcess::start(&db.url, &fake.env(&[]));
    drained(&store, &what).await;

    let shown = fake.shown();
    let expect = |title: String, place: (String, Option<String>)| {
        let found = with_title(&shown, &title);
        assert_eq!(
            found.len(),
            1,
            "{what}: {title:?} shown {} times: {shown:#?}",
            found.len()
        );
        assert_eq!(found[0].place, place, "{what}: {title:?} in its place");
    };
    let thread = match platform {
        // A Slack reply names its thread; a Discord thread is a channel
        // with the root message's id.
        Platform::Slack => (channels.deployments.clone(), Some(root_ref.clone())),
        _ => (root_ref.clone(), None),
    };
    for n in 1..=3 {
        expect(
            format!("Channel message {n}"),
            (channels.incidents.clone(), None),
        );
        expect(format!("Thread reply {n}"), thread.clone());
    }
    for person in people {
        let dm_channel = with_title(&shown, &format!("Direct message 1 to {person}"))
            .first()
            .map(|m| m.place.clone())
            .unwrap_or_else(|| panic!("{what}: no DM to {person}"));
        assert_ne!(dm_channel.0, channels.incidents, "{what}");
        for n in 1..=2 {
            expect(
                format!("Direct message {n} to {person}"),
                dm_channel.clone(),
            );
        }
    }
    assert_eq!(shown.len(), 1 + batch.len(), "{what}: nothing else shown");

    // The five calls the first process never heard back from were settled
    // by looking (Slack) or by the nonce (Discord), not posted again.
    assert!(fake.lookups() >= 5, "{what}: {} lookups", fake.lookups());
    let p = platform.as_str();
    let retried = metric(
        &second,
        &format!("tminus_outbox_uncertain_retries_total{{platform=\"{p}\"}}"),
    )
    .await;
    let found = metric(
        &second,
        &format!("tminus_outbox_uncertain_settled_total{{platform=\"{p}\",outcome=\"found\"}}"),
    )
    .await;
    assert!(retried >= 5, "{what}: {retried} uncertain retries counted");
    assert!(found >= 5, "{what}: {found} found");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_killed_mid_call_then_restarted_shows_every_message_once() {
    for db in all_dbs().await {
        killed_mid_call_then_restarted(Platform::Slack, db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_killed_mid_call_then_restarted_shows_every_message_once() {
    for db in all_dbs().await {
        killed_mid_call_then_restarted(Platform::Discord, db).await;
    }
}

/// The platform took the message, then answered 500: the retry finds it.
async fn answer_lost_to_a_server_error(platform: Platform) {
    let db = sqlite_db();
    let config = config();
    let channels = &config.channels[platform.as_str()];
    let fake = Fake::start(platform).await;
    let serve = ServeProcess::start(&db.url, &fake.env(&[]));
    fake.ready().await;
    let store = Store::connect(&db.url).await.unwrap();
    fake.applied_then_500();
    let to = Destination::Channel {
        channel: channels.deployments.clone(),
    };
    enqueue(&store, &[message(platform, to, None, "Posted once")]).await;
    drained(&store, &format!("{platform}")).await;
    let shown = fake.shown();
    assert_eq!(
        with_title(&shown, "Posted once").len(),
        1,
        "{platform}: {shown:#?}"
    );
    assert_eq!(fake.lookups(), 1, "{platform}");
    let p = platform.as_str();
    let attempts = metric(
        &serve,
        &format!("tminus_outbox_uncertain_attempts_total{{platform=\"{p}\"}}"),
    )
    .await;
    assert_eq!(attempts, 1, "{platform}");
    let found = metric(
        &serve,
        &format!("tminus_outbox_uncertain_settled_total{{platform=\"{p}\",outcome=\"found\"}}"),
    )
    .await;
    assert_eq!(found, 1, "{platform}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_to_a_server_error_is_not_posted_again() {
    answer_lost_to_a_server_error(Platform::Slack).await;
    answer_lost_to_a_server_error(Platform::Discord).await;
}

/// Without the history scopes the lookup is refused: the log says what is
/// missing and what it costs, once; the message is posted again (at least
/// once rather than never), and `/metrics` counts it as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_without_history_scopes_says_so_once_and_posts_anyway() {
    let db = sqlite_db();
    let fake = fake_slack::FakeSlack::start().await;
    fake.without_history_scopes();
    let platform = Fake::Slack(fake.clone());
    let log = tempfile::NamedTempFile::new().unwrap();
    let serve = ServeProcess::start_logged(
        &crate::helpers::bot_config(),
        &db.url,
        &platform.env(&[("RUST_LOG", "warn")]),
        log.path(),
    );
    let store = Store::connect(&db.url).await.unwrap();
    let deployments = config().channels["slack"].deployments.clone();
    for n in 1..=2 {
        fake.fail_next([fake_slack::Fault::AppliedThen(500)]);
        let to = Destination::Channel {
            channel: deployments.clone(),
        };
        let title = format!("Unverifiable {n}");
        enqueue(&store, &[message(Platform::Slack, to, None, &title)]).await;
        drained(&store, &title).await;
        // The cost the log warns of: it went out, and out again.
        assert_eq!(with_title(&platform.shown(), &title).len(), 2, "{title}");
    }
    let unknown = metric(
        &serve,
        "tminus_outbox_uncertain_settled_total{platform=\"slack\",outcome=\"unknown\"}",
    )
    .await;
    assert_eq!(unknown, 2);
    let text = std::fs::read_to_string(log.path()).unwrap();
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("missing_scope"))
        .collect();
    assert_eq!(said.len(), 1, "said once:\n{text}");
    for needed in ["channels:history", "groups:history", "im:history", "twice"] {
        assert!(said[0].contains(needed), "{needed} in {}", said[0]);
    }
}

/// The platform took a message, then the database could not record it
/// (a full disk, simulated by a trigger that refuses the write for a
/// moment): the claim runs out, the next attempt finds the message on the
/// platform and records it, and nobody sees it twice.
async fn outcome_not_recorded_then_settled(platform: Platform, ids_lost_too: bool) {
    let what = format!("{platform}, outcome not recorded (ids lost too: {ids_lost_too})");
    let db = sqlite_db();
    let store = Store::connect(&db.url).await.unwrap();
    let config = config();
    let channel = &config.channels[platform.as_str()].incidents;
    let fake = Fake::start(platform).await;
    let serve = ServeProcess::start(&db.url, &fake.env(&[]));
    fake.ready().await;
    // Recording a delivery fails for the next second; the claim lasts two.
    let deadline = chrono::Utc::now().timestamp_millis() + 1_000;
    let pool = store_pool(&db.url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER disk_full BEFORE UPDATE OF delivered_at ON outbox \
         WHEN NEW.delivered_at IS NOT NULL AND NEW.delivered_at < {deadline} \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )))
    .execute(&pool)
    .await
    .unwrap();
    if ids_lost_too {
        // The platform's id for the message cannot be kept either.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER ids_lost BEFORE INSERT ON messages WHEN NEW.updated_at < {deadline} \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    enqueue(
        &store,
        &[message(
            platform,
            Destination::Channel {
                channel: channel.clone(),
            },
            None,
            "Posted once though unrecorded",
        )],
    )
    .await;
    drained(&store, &what).await;
    let shown = fake.shown();
    let found = with_title(&shown, "Posted once though unrecorded");
    assert_eq!(
        found.len(),
        1,
        "{what}: shown {} times: {shown:#?}",
        found.len()
    );
    // It was retried (the claim ran out with no outcome) and the retry
    // knew the message was out: the id it had recorded, or a lookup.
    let p = platform.as_str();
    let retried = metric(
        &serve,
        &format!("tminus_outbox_uncertain_retries_total{{platform=\"{p}\"}}"),
    )
    .await;
    assert!(
        retried >= 1,
        "{what}: retried after the unrecorded outcome ({retried})"
    );
    if ids_lost_too {
        let found = metric(
            &serve,
            &format!("tminus_outbox_uncertain_settled_total{{platform=\"{p}\",outcome=\"found\"}}"),
        )
        .await;
        assert!(
            found >= 1,
            "{what}: the retry looked and found it ({found})"
        );
    }
    store.close().await;
}

async fn store_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_post_whose_outcome_was_not_recorded_is_not_posted_twice() {
    outcome_not_recorded_then_settled(Platform::Slack, false).await;
    outcome_not_recorded_then_settled(Platform::Slack, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_post_whose_outcome_was_not_recorded_is_not_posted_twice() {
    outcome_not_recorded_then_settled(Platform::Discord, false).await;
    outcome_not_recorded_then_settled(Platform::Discord, true).await;
}
