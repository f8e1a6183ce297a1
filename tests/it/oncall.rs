//! On-call end to end. In the shell (virtual clock): seed 003's ladder,
//! `/oncall`, an override, an Acknowledge, and a SIGKILL between two pages
//! after which the next page comes on time and once. With real `tminus
//! serve` processes on the real clock, a fake Slack and the `fast` policy
//! (pages three seconds apart): an escalation killed with SIGKILL goes on
//! after a restart, the overdue page at once and the next on time, each
//! once; two processes on one PostgreSQL share a burst of incidents and send
//! every page and message exactly once; killing one of them mid-burst loses
//! nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tminus::store::Store;

use crate::fake_slack::{Call, FakeSlack, BOT_TOKEN};
use crate::helpers::{
    all_dbs, config, fast_escalation_config, postgres_db, slack_command, sqlite_db, ServeProcess,
    ShellSession, TestDb,
};

const SECRET: &str = "oncall-signing-secret";

/// How many direct messages paging `person` for incident `n` a transcript shows.
fn shell_pages(transcript: &str, person: &str, n: i64) -> usize {
    let header = format!("── direct message to {person} ──");
    let title = format!("📟 Incident #{n} ");
    let lines: Vec<&str> = transcript.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == header && w[1].starts_with(&title))
        .count()
}

#[tokio::test]
async fn the_shell_walks_the_ladder_across_a_sigkill_and_honours_overrides() {
    let config = config();
    for db in all_dbs().await {
        let mut s = ShellSession::start(&db.url, "alice");
        // Who is primary on the shell's clock, as /oncall says.
        let oncall = s.send("/oncall");
        let primary = config
            .directory
            .people
            .values()
            .find(|p| oncall.contains(&format!("Primary on-call: {} until", p.name)))
            .unwrap_or_else(|| panic!("no primary in {oncall}"))
            .id
            .to_string();
        s.send("/deploy start checkout v2 --runbook go-live");
        let out = s.send("/deploy incident checkout returns 500s --severity critical");
        assert!(out.contains("Opened incident #1 (critical)"), "{out}");
        assert_eq!(shell_pages(&out, &primary, 1), 1, "{out}");
        let out = s.send("/deploy incident checkout still down");
        assert!(
            out.contains("Incident #1 is already open for deployment #1"),
            "{out}"
        );
        let out = s.send("wait 5m");
        assert_eq!(shell_pages(&out, "bruno", 1), 1, "{out}");
        s.kill();

        // Started again: the clock resumes where it stopped; the advice
        // step is five minutes after the backend lead's page.
        let mut s = ShellSession::start(&db.url, "alice");
        let out = s.send("wait 4m");
        assert!(
            !out.contains("escalation step 3"),
            "{}: early: {out}",
            db.kind
        );
        let out = s.send("wait 1m");
        assert_eq!(
            out.matches("Incident #1 — escalation step 3 of 4").count(),
            1,
            "{out}"
        );
        assert!(out.contains("roll back now"), "{out}");
        let out = s.send("/oncall");
        assert!(out.contains("Go-live critical"), "{out}");
        assert!(
            out.contains("#1 critical — triggered — checkout returns 500s"),
            "{out}"
        );

        s.as_person("bruno");
        let out = s.press("Acknowledge", None);
        assert!(
            out.contains("Bruno Ferreira acknowledged incident #1"),
            "{out}"
        );
        let out = s.send("wait 10m");
        assert!(
            !out.contains("You are paged"),
            "a page after the acknowledgement: {out}"
        );
        let out = s.press("Resolve", Some("rolled back to v1"));
        assert!(
            out.contains("resolved incident #1: rolled back to v1"),
            "{out}"
        );

        // An override: Zoe holds the primary rotation for an hour, so the
        // next incident pages her first.
        s.as_person(&primary);
        let out = s.send("/oncall override zoe 1h primary");
        assert!(
            out.contains("handed Primary on-call to Zoe Kowalski for 1h"),
            "{out}"
        );
        let out = s.send("/oncall");
        assert!(
            out.contains("Primary on-call: Zoe Kowalski (override)"),
            "{out}"
        );
        let out = s.send("/deploy incident still slow");
        assert!(out.contains("Opened incident #2 (high)"), "{out}");
        assert_eq!(shell_pages(&out, "zoe", 2), 1, "{out}");
        s.as_person("farah");
        let out = s.send("/oncall override farah 1h primary");
        assert!(out.contains("Only members of Primary on-call"), "{out}");
        let out = s.press("Acknowledge", None);
        assert!(
            out.contains("Only the people its escalation pages can acknowledge incident #2"),
            "{out}"
        );
        let report = s.send("/deploy report");
        assert!(report.contains("## Incidents"), "{report}");
        assert!(report.contains("**Resolved:** Bruno Ferreira"), "{report}");
        s.quit();
    }
}

fn serve(config_dir: &Path, db: &TestDb, fake: &FakeSlack) -> ServeProcess {
    ServeProcess::start_with(
        config_dir,
        &db.url,
        &[
            ("SLACK_BOT_TOKEN", BOT_TOKEN.to_string()),
            ("SLACK_SIGNING_SECRET", SECRET.to_string()),
            ("SLACK_API_URL", fake.api_url()),
            // A dead process's claims pass to the living within two seconds.
            ("TMINUS_LEASE", "2s".to_string()),
        ],
    )
}

/// The direct-message pages the fake received: (incident, step) → how often,
/// and to which channel.
fn dm_pages(calls: &[Call]) -> BTreeMap<(i64, u32), Vec<String>> {
    let mut out: BTreeMap<(i64, u32), Vec<String>> = BTreeMap::new();
    for c in calls
        .iter()
        .filter(|c| c.ok() && c.method == "chat.postMessage")
    {
        let text = c.all_text();
        if !text.contains("You are paged") {
            continue;
        }
        let incident = text
            .split("Incident #")
            .nth(1)
            .and_then(|t| t.split(|ch: char| !ch.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .expect("an incident number");
        let step = text
            .split("escalation step ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("a step number");
        out.entry((incident, step))
            .or_default()
            .push(c.str("channel").unwrap_or_default().to_string());
    }
    out
}

/// Poll the fake until `pred` holds for its calls, up to `secs` seconds.
async fn wait_calls(fake: &FakeSlack, secs: u64, what: &str, pred: impl Fn(&[Call]) -> bool) {
    let start = Instant::now();
    loop {
        if pred(&fake.calls()) {
            return;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!(
                "timed out waiting for {what}; pages so far: {:?}",
                dm_pages(&fake.calls())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the first page's direct message is recorded as delivered.
async fn first_page_recorded(db: &TestDb) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    for _ in 0..150 {
        let delivered: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE message_key LIKE 'incident:%:page:%' AND delivered_at IS NOT NULL",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if delivered > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the first page was never recorded as delivered");
}

async fn escalation_survives_sigkill(db: TestDb) {
    let dir = fast_escalation_config();
    let fake = FakeSlack::start().await;
    let http = reqwest::Client::new();
    let mut first = serve(dir.path(), &db, &fake);
    let answer = slack_command(
        &http,
        &first,
        SECRET,
        "alice",
        "start api v1 --runbook fast",
    )
    .await;
    assert!(answer.contains("Started deployment #1"), "{answer}");
    let answer = slack_command(
        &http,
        &first,
        SECRET,
        "alice",
        "incident api down --severity critical",
    )
    .await;
    assert!(answer.contains("Opened incident #1"), "{answer}");
    wait_calls(&fake, 15, "the first page", |c| {
        dm_pages(c).contains_key(&(1, 1))
    })
    .await;
    // Killed between the first and second page, once the first page's
    // delivery is recorded: a kill while a call is in flight is the
    // exactly-once tests' subject, not this one's.
    first_page_recorded(&db).await;
    first.kill();
    let killed = chrono::Utc::now();
    // Down past the second page's due time: on restart it is overdue.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let restarted = chrono::Utc::now();
    let _second = serve(dir.path(), &db, &fake);
    wait_calls(&fake, 15, "the third page", |c| {
        dm_pages(c).contains_key(&(1, 3))
    })
    .await;
    // Nothing more comes: the ladder has three steps.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let pages = dm_pages(&fake.calls());
    let counts: Vec<((i64, u32), usize)> = pages.iter().map(|(k, v)| (*k, v.len())).collect();
    assert_eq!(
        counts,
        vec![((1, 1), 1), ((1, 2), 1), ((1, 3), 1)],
        "{}: each step pages once",
        db.kind
    );
    let store = Store::connect(&db.url).await.unwrap();
    let recorded = store.all_pages().await.unwrap();
    let at = |step: usize| {
        recorded
            .iter()
            .find(|(_, p)| p.step == step)
            .map(|(_, p)| p.at)
            .unwrap()
    };
    assert!(
        at(1) > killed,
        "the second page was not sent before the kill"
    );
    assert!(
        at(1) - restarted < chrono::Duration::seconds(5),
        "the overdue page fires at once after the restart: restarted {restarted}, paged {}",
        at(1)
    );
    assert!(
        at(2) - at(1) >= chrono::Duration::seconds(3),
        "the next page waits its full three seconds: {} then {}",
        at(1),
        at(2)
    );
    assert_eq!(recorded.len(), 3, "{recorded:?}");
}

#[tokio::test]
async fn an_escalation_killed_mid_way_goes_on_once_after_a_restart() {
    escalation_survives_sigkill(sqlite_db()).await;
    if let Some(db) = postgres_db().await {
        escalation_survives_sigkill(db).await;
    }
}

const BURST: usize = 10;

/// Start `BURST` runs and open an incident on each, alternating between
/// the processes that are up; returns the incident numbers.
async fn burst(http: &reqwest::Client, procs: &[&ServeProcess], offset: usize) {
    for i in 0..BURST {
        let to = procs[i % procs.len()];
        let n = offset + i + 1;
        let answer = slack_command(
            http,
            to,
            SECRET,
            "alice",
            &format!("start svc-{n} v{n} --runbook fast"),
        )
        .await;
        assert!(
            answer.contains(&format!("Started deployment #{n}")),
            "{answer}"
        );
        let answer = slack_command(
            http,
            to,
            SECRET,
            "emeka",
            &format!("incident svc-{n} errors --run {n} --severity critical"),
        )
        .await;
        assert!(answer.contains("Opened incident"), "{answer}");
    }
}

/// (messages sent, messages waiting) in the outbox.
async fn outbox_rows(db: &TestDb) -> (i64, i64) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let delivered: i64 =
        // Superseded edits are marked delivered without a platform call.
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL \
             AND COALESCE(last_error, '') <> 'superseded by a newer edit'",
        )
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    (delivered, pending)
}

/// Wait until every incident of the burst has had its three pages sent and
/// the outbox is empty.
async fn settle(fake: &FakeSlack, db: &TestDb, incidents: usize) {
    wait_calls(fake, 60, "every page of the burst", |c| {
        let pages = dm_pages(c);
        (1..=incidents as i64).all(|i| (1..=3).all(|s| pages.contains_key(&(i, s))))
    })
    .await;
    let start = Instant::now();
    while outbox_rows(db).await.1 > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_processes_on_one_postgres_send_every_page_and_message_once() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let dir = fast_escalation_config();
    let fake = FakeSlack::start().await;
    let http = reqwest::Client::new();
    let a = serve(dir.path(), &db, &fake);
    let b = serve(dir.path(), &db, &fake);
    burst(&http, &[&a, &b], 0).await;
    settle(&fake, &db, BURST).await;
    // Let both processes look once more for anything left.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let calls = fake.calls();
    let pages = dm_pages(&calls);
    assert_eq!(pages.len(), BURST * 3);
    for (key, sent) in &pages {
        assert_eq!(sent.len(), 1, "page {key:?} was sent {} times", sent.len());
    }
    // One platform call per delivered outbox row: nothing twice, nothing lost.
    let posts = calls
        .iter()
        .filter(|c| c.ok() && (c.method == "chat.postMessage" || c.method == "chat.update"))
        .count() as i64;
    let (delivered, pending) = outbox_rows(&db).await;
    assert_eq!(pending, 0);
    assert_eq!(posts, delivered, "platform calls vs delivered messages");
    let mut seen = std::collections::HashSet::new();
    for c in calls
        .iter()
        .filter(|c| c.ok() && c.method == "chat.postMessage")
    {
        let key = (
            c.str("channel").map(str::to_string),
            c.str("thread_ts").map(str::to_string),
            c.all_text(),
        );
        assert!(seen.insert(key.clone()), "posted twice: {key:?}");
    }
    // The incidents channel shows each incident's card before its first
    // page: the card's first post keeps its place in the lane even when
    // an edit of it waits behind the page.
    let incidents_channel: Vec<String> = calls
        .iter()
        .filter(|c| {
            c.ok() && c.method == "chat.postMessage" && c.str("channel") == Some("C0INCIDENT")
        })
        .map(|c| c.all_text())
        .collect();
    for n in 1..=BURST {
        let at = |what: &str| incidents_channel.iter().position(|t| t.contains(what));
        let card = at(&format!("🚨 Incident #{n} ·")).expect("the incident card was posted");
        let page = at(&format!("📟 Incident #{n} — escalation step 1"))
            .expect("the first page was posted");
        assert!(card < page, "incident #{n}: page before card");
    }
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(store.all_pages().await.unwrap().len(), BURST * 3);
}

#[tokio::test]
async fn killing_one_of_two_processes_mid_burst_loses_nothing() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let dir = fast_escalation_config();
    let fake = FakeSlack::start().await;
    let http = reqwest::Client::new();
    let mut a = serve(dir.path(), &db, &fake);
    let b = serve(dir.path(), &db, &fake);
    burst(&http, &[&a, &b], 0).await;
    // Mid-burst: first pages are out, later ones are timers, some of them
    // claimed by the process about to die.
    a.kill();
    burst(&http, &[&b], BURST).await;
    settle(&fake, &db, 2 * BURST).await;

    let pages = dm_pages(&fake.calls());
    assert_eq!(
        pages.len(),
        2 * BURST * 3,
        "every page of every incident arrived"
    );
    let store = Store::connect(&db.url).await.unwrap();
    let recorded = store.all_pages().await.unwrap();
    assert_eq!(
        recorded.len(),
        2 * BURST * 3,
        "one recorded page per person per step"
    );
    // A process killed inside an HTTP call to Slack cannot know whether the
    // message went out; the survivor looks for it by its metadata before
    // posting again, so no page arrives twice.
    let doubled: Vec<_> = pages.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(doubled.is_empty(), "pages that went out twice: {doubled:?}");
    let mut shown = std::collections::HashSet::new();
    for m in fake.messages() {
        let key = (m.channel.clone(), m.thread_ts.clone(), m.text.to_string());
        assert!(shown.insert(key.clone()), "shown twice in Slack: {key:?}");
    }
}
