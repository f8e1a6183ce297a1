//! The store, on every backend: runs survive a round trip, run numbers count
//! per channel, concurrent commands never lose an update, retried requests
//! count once, the audit log refuses changes, timers fire once, and outbox
//! lanes keep their order.
//!
//! Each test runs the same assertions on a fresh SQLite database and, when
//! `TEST_DATABASE_URL` is set, on a fresh PostgreSQL database. Assertions are
//! on state (rows, counts, order), never on timing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use sqlx::AnyPool;
use tminus::chat::{buttons, Card, Destination, Outgoing};
use tminus::domain::{
    Action, Dur, ItemState, PersonId, Platform, RoleId, Run, RunId, RunStatus, SignOff, Verdict,
};
use tminus::engine::{Actor, Command, Engine, Reply, Request};
use tminus::scheduler::Scheduler;
use tminus::store::{Store, TimerKind};

use crate::helpers::{all_dbs, config, engine, postgres_db, TestDb};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const CHANNEL: &str = "#deployments";

fn shell(user: &str) -> Actor {
    Actor {
        platform: Platform::Shell,
        user: user.into(),
        channel: CHANNEL.into(),
    }
}

fn person(key: &str) -> PersonId {
    PersonId::new(key)
}

fn start_cmd(service: &str, version: &str, runbook: Option<&str>) -> Request {
    Request::Command(Command::Start {
        service: service.into(),
        version: version.into(),
        runbook: runbook.map(str::to_string),
        env: None,
    })
}

/// Start a run as `user` and return its id (the newest run of the channel).
async fn start(engine: &Engine, kind: &str, user: &str, runbook: Option<&str>) -> RunId {
    let reply = engine
        .handle(
            &shell(user),
            start_cmd("payments-api", "v2.4.0", runbook),
            None,
        )
        .await;
    assert!(reply.changed, "[{kind}] start failed: {}", reply.text);
    let recent = engine
        .store()
        .recent_runs(Platform::Shell, CHANNEL, 10)
        .await
        .unwrap_or_else(|e| panic!("[{kind}] recent_runs: {e:#}"));
    recent
        .first()
        .unwrap_or_else(|| panic!("[{kind}] no run after start"))
        .id
}

async fn click(
    engine: &Engine,
    user: &str,
    run: RunId,
    action: &Action,
    reason: Option<&str>,
) -> Reply {
    engine
        .handle(
            &shell(user),
            Request::click(&buttons::encode(run, action), reason.map(str::to_string)).unwrap(),
            None,
        )
        .await
}

/// Click and insist that the click changed something.
async fn click_ok(
    engine: &Engine,
    kind: &str,
    user: &str,
    run: RunId,
    action: Action,
    reason: Option<&str>,
) {
    let reply = click(engine, user, run, &action, reason).await;
    assert!(
        reply.changed,
        "[{kind}] {user} {action:?} did not change the run: {}",
        reply.text
    );
}

fn done(phase: &str, item: &str) -> Action {
    Action::ItemDone {
        phase: phase.into(),
        item: item.into(),
    }
}

fn sign(phase: &str, role: &str) -> Action {
    Action::SignOff {
        phase: phase.into(),
        role: RoleId::new(role),
    }
}

fn advance(phase: &str) -> Action {
    Action::Advance {
        phase: phase.into(),
    }
}

async fn load(store: &Store, kind: &str, id: RunId) -> Run {
    store
        .run(id)
        .await
        .unwrap_or_else(|e| panic!("[{kind}] load run {id}: {e:#}"))
        .unwrap_or_else(|| panic!("[{kind}] run {id} is missing"))
}

/// A second, plain connection pool to the test database, for looking at
/// rows the store has no method for (and for trying what it must refuse).
/// `Store::connect` has already installed the `Any` drivers.
async fn raw(db: &TestDb) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("[{}] raw connect: {e}", db.kind))
}

/// The outbox of a run, oldest first: (message key, message).
async fn outbox_of(pool: &AnyPool, kind: &str, run: RunId) -> Vec<(Option<String>, Outgoing)> {
    let rows: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT message_key, payload FROM outbox WHERE run_id = $1 ORDER BY id")
            .bind(run.0)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("[{kind}] read outbox: {e}"));
    rows.into_iter()
        .map(|(key, payload)| {
            let msg: Outgoing = serde_json::from_str(&payload)
                .unwrap_or_else(|e| panic!("[{kind}] outbox payload {payload}: {e}"));
            (key, msg)
        })
        .collect()
}

fn count_key(outbox: &[(Option<String>, Outgoing)], key: &str) -> usize {
    outbox
        .iter()
        .filter(|(k, _)| k.as_deref() == Some(key))
        .count()
}

/// What a phase card shows: (items done, approvals), read from its sections.
fn card_progress(card: &Card) -> (usize, usize) {
    let section = |name: &str| {
        card.sections
            .iter()
            .find(|s| s.heading.as_deref() == Some(name))
            .map_or(&[][..], |s| s.lines.as_slice())
    };
    let done = section("Checklist")
        .iter()
        .filter(|l| l.starts_with('✅'))
        .count();
    let approved = section("Sign-offs")
        .iter()
        .map(|l| l.matches("✅ ").count())
        .sum();
    (done, approved)
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("a valid timestamp")
}

fn sorted_signoffs(mut s: Vec<SignOff>) -> Vec<SignOff> {
    s.sort_by(|a, b| {
        (&a.phase, &a.role, &a.person, a.at).cmp(&(&b.phase, &b.role, &b.person, b.at))
    });
    s
}

// ---------------------------------------------------------------------------
// 1. Round trip
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_run_survives_a_round_trip_through_the_store() {
    for db in all_dbs().await {
        let kind = db.kind;
        let (engine, clock) = engine(&db).await;
        let store = engine.store().clone();
        let t_start = engine.now();
        let at = |mins: i64| t_start + Duration::minutes(mins);
        let step = |mins: i64| clock.set(at(mins));

        let id = start(&engine, kind, "alice", Some("quickstart")).await;

        step(1);
        click_ok(&engine, kind, "chen", id, done("prepare", "tests"), None).await;
        step(2);
        click_ok(&engine, kind, "bruno", id, done("prepare", "notes"), None).await;
        step(3);
        let na = Action::ItemNotApplicable {
            phase: "prepare".into(),
            item: "feature-flag".into(),
            reason: None,
        };
        click_ok(
            &engine,
            kind,
            "priya",
            id,
            na,
            Some("no flag in this release"),
        )
        .await;
        step(4);
        click_ok(&engine, kind, "alice", id, advance("prepare"), None).await;
        step(5);
        click_ok(
            &engine,
            kind,
            "emeka",
            id,
            done("production", "announce"),
            None,
        )
        .await;
        step(6);
        click_ok(
            &engine,
            kind,
            "emeka",
            id,
            done("production", "deploy"),
            None,
        )
        .await;
        step(7);
        click_ok(
            &engine,
            kind,
            "farah",
            id,
            done("production", "smoke"),
            None,
        )
        .await;
        step(8);
        let undo = Action::ItemUndo {
            phase: "production".into(),
            item: "smoke".into(),
        };
        click_ok(&engine, kind, "farah", id, undo, None).await;
        step(9);
        click_ok(
            &engine,
            kind,
            "emeka",
            id,
            sign("production", "devops"),
            None,
        )
        .await;
        step(10);
        let reject = Action::Reject {
            phase: "production".into(),
            role: RoleId::new("qa"),
            reason: None,
        };
        click_ok(&engine, kind, "priya", id, reject, Some("smoke test flaky")).await;
        step(11);
        click_ok(&engine, kind, "chen", id, sign("production", "qa"), None).await;

        // Checkpoint 1: mid-run, in the gated phase.
        let run = load(&store, kind, id).await;
        assert_eq!(run.id, id, "[{kind}]");
        assert_eq!(run.platform, Platform::Shell, "[{kind}]");
        assert_eq!(run.channel, CHANNEL, "[{kind}]");
        assert_eq!(run.number, 1, "[{kind}]");
        assert_eq!(run.service, "payments-api", "[{kind}]");
        assert_eq!(run.version, "v2.4.0", "[{kind}]");
        assert_eq!(run.env, "production", "[{kind}] the default env");
        assert_eq!(run.runbook, "quickstart", "[{kind}]");
        assert_eq!(run.started_by, person("alice"), "[{kind}]");
        assert_eq!(run.started_at, t_start, "[{kind}]");
        assert_eq!(run.status, RunStatus::Active, "[{kind}]");
        assert_eq!(run.phase, "production", "[{kind}]");
        assert_eq!(run.phase_entered_at, at(4), "[{kind}]");
        assert_eq!(run.t0, Some(at(6)), "[{kind}] T0 is the deploy click");
        assert_eq!(run.ended_at, None, "[{kind}]");
        assert_eq!(run.end_reason, None, "[{kind}]");

        let item = |phase: &str, item: &str| (phase.to_string(), item.to_string());
        let done_by = |who: &str, mins: i64| ItemState::Done {
            by: person(who),
            at: at(mins),
        };
        let mut expected_items = BTreeMap::from([
            (item("prepare", "tests"), done_by("chen", 1)),
            (item("prepare", "notes"), done_by("bruno", 2)),
            (
                item("prepare", "feature-flag"),
                ItemState::NotApplicable {
                    by: person("priya"),
                    at: at(3),
                    reason: "no flag in this release".into(),
                },
            ),
            (item("production", "announce"), done_by("emeka", 5)),
            (item("production", "deploy"), done_by("emeka", 6)),
        ]);
        assert_eq!(
            run.items, expected_items,
            "[{kind}] items (the undone smoke item must be gone)"
        );

        let signoff = |who: &str, role: &str, verdict: Verdict, mins: i64| SignOff {
            phase: "production".into(),
            role: RoleId::new(role),
            person: person(who),
            verdict,
            at: at(mins),
        };
        assert_eq!(
            sorted_signoffs(run.signoffs.clone()),
            sorted_signoffs(vec![
                signoff("emeka", "devops", Verdict::Approved, 9),
                signoff(
                    "priya",
                    "qa",
                    Verdict::Rejected {
                        reason: "smoke test flaky".into()
                    },
                    10
                ),
                signoff("chen", "qa", Verdict::Approved, 11),
            ]),
            "[{kind}] sign-offs"
        );

        // Priya changes her mind: her row is replaced, not duplicated.
        step(12);
        click_ok(&engine, kind, "priya", id, sign("production", "qa"), None).await;
        step(13);
        click_ok(
            &engine,
            kind,
            "farah",
            id,
            done("production", "smoke"),
            None,
        )
        .await;
        step(14);
        click_ok(&engine, kind, "alice", id, advance("production"), None).await;
        step(15);
        click_ok(
            &engine,
            kind,
            "bruno",
            id,
            done("watch", "dashboards"),
            None,
        )
        .await;
        click_ok(&engine, kind, "bruno", id, done("watch", "done"), None).await;
        step(16);
        click_ok(&engine, kind, "alice", id, advance("watch"), None).await;

        // Checkpoint 2: completed.
        let run = load(&store, kind, id).await;
        assert_eq!(run.status, RunStatus::Completed, "[{kind}]");
        assert_eq!(run.phase, "watch", "[{kind}]");
        assert_eq!(run.phase_entered_at, at(14), "[{kind}]");
        assert_eq!(run.t0, Some(at(6)), "[{kind}]");
        assert_eq!(run.ended_at, Some(at(16)), "[{kind}]");
        assert_eq!(run.end_reason, None, "[{kind}]");
        expected_items.insert(item("production", "smoke"), done_by("farah", 13));
        expected_items.insert(item("watch", "dashboards"), done_by("bruno", 15));
        expected_items.insert(item("watch", "done"), done_by("bruno", 15));
        assert_eq!(run.items, expected_items, "[{kind}] items");
        assert_eq!(
            sorted_signoffs(run.signoffs.clone()),
            sorted_signoffs(vec![
                signoff("emeka", "devops", Verdict::Approved, 9),
                signoff("priya", "qa", Verdict::Approved, 12),
                signoff("chen", "qa", Verdict::Approved, 11),
            ]),
            "[{kind}] sign-offs after priya approved"
        );

        // The listing reads the same row.
        let listed = store
            .recent_runs(Platform::Shell, CHANNEL, 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "[{kind}]");
        let head = Run {
            items: BTreeMap::new(),
            signoffs: Vec::new(),
            ..run.clone()
        };
        assert_eq!(listed[0], head, "[{kind}] recent_runs row");
        assert_eq!(
            store
                .run_by_number(Platform::Shell, CHANNEL, 1)
                .await
                .unwrap()
                .as_ref(),
            Some(&run),
            "[{kind}] run_by_number"
        );
        assert!(
            store.open_run_ids().await.unwrap().is_empty(),
            "[{kind}] a completed run is not open"
        );

        // The audit log holds every event, in order, with who did it.
        let audit = store.audit_for_run(id).await.unwrap();
        let got: Vec<(&str, &str)> = audit
            .iter()
            .map(|e| (e.action.as_str(), e.actor.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("run.started", "alice"),
                ("item.done", "chen"),
                ("item.done", "bruno"),
                ("item.not_applicable", "priya"),
                ("phase.entered", "alice"),
                ("item.done", "emeka"),
                ("item.done", "emeka"),
                ("run.production_deployed", "emeka"),
                ("item.done", "farah"),
                ("item.undone", "farah"),
                ("signoff.approved", "emeka"),
                ("signoff.rejected", "priya"),
                ("signoff.approved", "chen"),
                ("signoff.approved", "priya"),
                ("item.done", "farah"),
                ("phase.entered", "alice"),
                ("item.done", "bruno"),
                ("item.done", "bruno"),
                ("run.completed", "alice"),
            ],
            "[{kind}] audit log"
        );
        assert!(
            audit
                .iter()
                .all(|e| e.run == Some(id) && e.platform == "shell" && e.location == CHANNEL),
            "[{kind}] audit entries carry run, platform and channel: {audit:?}"
        );
        assert_eq!(audit[0].at, t_start, "[{kind}]");
        assert_eq!(audit.last().unwrap().at, at(16), "[{kind}]");
    }
}

#[tokio::test]
async fn rollbacks_and_aborts_survive_a_round_trip() {
    for db in all_dbs().await {
        let kind = db.kind;
        let (engine, clock) = engine(&db).await;
        let store = engine.store().clone();
        let t_start = engine.now();
        let at = |mins: i64| t_start + Duration::minutes(mins);

        // #1 is deployed, then rolled back.
        let id1 = start(&engine, kind, "alice", Some("quickstart")).await;
        for item in ["tests", "notes"] {
            click_ok(&engine, kind, "alice", id1, done("prepare", item), None).await;
        }
        click_ok(&engine, kind, "alice", id1, advance("prepare"), None).await;
        clock.set(at(1));
        click_ok(
            &engine,
            kind,
            "alice",
            id1,
            done("production", "deploy"),
            None,
        )
        .await;
        clock.set(at(2));
        let rollback = Action::Rollback { reason: None };
        click_ok(&engine, kind, "emeka", id1, rollback, Some("error rate up")).await;
        clock.set(at(3));
        click_ok(
            &engine,
            kind,
            "emeka",
            id1,
            done("rollback", "redeploy"),
            None,
        )
        .await;

        let run = load(&store, kind, id1).await;
        assert_eq!(run.status, RunStatus::RollingBack, "[{kind}]");
        assert_eq!(run.phase, "rollback", "[{kind}]");
        assert_eq!(run.phase_entered_at, at(2), "[{kind}]");
        assert_eq!(run.t0, Some(at(1)), "[{kind}]");
        assert_eq!(run.ended_at, None, "[{kind}]");
        assert_eq!(run.end_reason.as_deref(), Some("error rate up"), "[{kind}]");
        assert_eq!(
            run.item_state("rollback", "redeploy"),
            &ItemState::Done {
                by: person("emeka"),
                at: at(3)
            },
            "[{kind}]"
        );
        assert_eq!(
            store.open_run_ids().await.unwrap(),
            vec![id1],
            "[{kind}] a run rolling back is open"
        );

        // #2 is aborted by number, with a reason.
        let id2 = start(&engine, kind, "bruno", Some("quickstart")).await;
        clock.set(at(4));
        let reply = engine
            .handle(
                &shell("bruno"),
                Request::Command(Command::Abort {
                    run: 2,
                    reason: "wrong version".into(),
                }),
                None,
            )
            .await;
        assert!(reply.changed, "[{kind}] abort: {}", reply.text);
        let run = load(&store, kind, id2).await;
        assert_eq!(run.number, 2, "[{kind}]");
        assert_eq!(run.status, RunStatus::Aborted, "[{kind}]");
        assert_eq!(run.phase, "prepare", "[{kind}]");
        assert_eq!(run.ended_at, Some(at(4)), "[{kind}]");
        assert_eq!(run.end_reason.as_deref(), Some("wrong version"), "[{kind}]");
        assert_eq!(run.t0, None, "[{kind}]");
        assert_eq!(
            store.open_run_ids().await.unwrap(),
            vec![id1],
            "[{kind}] an aborted run is closed"
        );

        // #1 finishes its rollback.
        for item in ["verify", "tell"] {
            click_ok(&engine, kind, "emeka", id1, done("rollback", item), None).await;
        }
        clock.set(at(5));
        click_ok(&engine, kind, "emeka", id1, advance("rollback"), None).await;
        let run = load(&store, kind, id1).await;
        assert_eq!(run.status, RunStatus::RolledBack, "[{kind}]");
        assert_eq!(run.ended_at, Some(at(5)), "[{kind}]");
        assert_eq!(run.end_reason.as_deref(), Some("error rate up"), "[{kind}]");
        assert!(store.open_run_ids().await.unwrap().is_empty(), "[{kind}]");
        let actions: Vec<String> = store
            .audit_for_run(id1)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .filter(|a| a.starts_with("run."))
            .collect();
        assert_eq!(
            actions,
            [
                "run.started",
                "run.production_deployed",
                "run.rollback_started",
                "run.rolled_back"
            ],
            "[{kind}]"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Run numbers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn run_numbers_count_up_per_channel_and_platform() {
    let cfg = config();
    let quickstart = &cfg.runbooks["quickstart"];
    for db in all_dbs().await {
        let kind = db.kind;
        let (engine, _clock) = engine(&db).await;
        let store = engine.store().clone();
        for _ in 0..3 {
            start(&engine, kind, "alice", Some("quickstart")).await;
        }
        let numbers: Vec<i64> = store
            .recent_runs(Platform::Shell, CHANNEL, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.number)
            .collect();
        assert_eq!(numbers, vec![3, 2, 1], "[{kind}] newest first");

        let now = engine.now();
        let insert = |platform: Platform, channel: &'static str| {
            let store = store.clone();
            async move {
                let mut run = Run::start(
                    quickstart,
                    platform,
                    channel,
                    "web",
                    "v1",
                    "production",
                    &person("bruno"),
                    now,
                );
                let mut tx = store.begin().await.unwrap();
                tx.insert_run(&mut run).await.unwrap();
                tx.commit().await.unwrap();
                run
            }
        };
        let other_channel = insert(Platform::Shell, "#other").await;
        assert_eq!(
            other_channel.number, 1,
            "[{kind}] another channel starts at #1"
        );
        let slack1 = insert(Platform::Slack, CHANNEL).await;
        assert_eq!(
            slack1.number, 1,
            "[{kind}] the same channel name on another platform starts at #1"
        );
        let slack2 = insert(Platform::Slack, CHANNEL).await;
        assert_eq!(slack2.number, 2, "[{kind}]");
        let shell4 = insert(Platform::Shell, CHANNEL).await;
        assert_eq!(
            shell4.number, 4,
            "[{kind}] the engine's channel goes on at #4"
        );
        let other2 = insert(Platform::Shell, "#other").await;
        assert_eq!(other2.number, 2, "[{kind}]");

        // A rolled-back insert rolls its number back with it.
        {
            let mut run = Run::start(
                quickstart,
                Platform::Shell,
                "#other",
                "web",
                "v1",
                "production",
                &person("bruno"),
                now,
            );
            let mut tx = store.begin().await.unwrap();
            tx.insert_run(&mut run).await.unwrap();
            drop(tx);
        }
        let other3 = insert(Platform::Shell, "#other").await;
        assert_eq!(
            other3.number, 3,
            "[{kind}] a rolled-back insert gives its number back"
        );

        // Every run has a distinct id and is found by its number.
        let ids: BTreeSet<RunId> = [&other_channel, &slack1, &slack2, &shell4, &other2, &other3]
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids.len(), 6, "[{kind}] distinct ids");
        for run in [&other_channel, &slack1, &slack2, &shell4, &other2, &other3] {
            let found = store
                .run_by_number(run.platform, &run.channel, run.number)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("[{kind}] run #{} not found", run.number));
            assert_eq!(found, *run, "[{kind}] run_by_number");
        }
        let slack: Vec<i64> = store
            .recent_runs(Platform::Slack, CHANNEL, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.number)
            .collect();
        assert_eq!(slack, vec![2, 1], "[{kind}] slack runs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_get_distinct_numbers() {
    const N: i64 = 8;
    for db in all_dbs().await {
        let kind = db.kind;
        let (engine, _clock) = engine(&db).await;
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    engine
                        .handle(
                            &shell("alice"),
                            start_cmd(&format!("svc-{i}"), "v1", Some("quickstart")),
                            None,
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            let reply = task.await.unwrap();
            assert!(reply.changed, "[{kind}] a start failed: {}", reply.text);
        }
        let mut numbers: Vec<i64> = engine
            .store()
            .recent_runs(Platform::Shell, CHANNEL, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.number)
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=N).collect::<Vec<_>>(), "[{kind}] numbers");
    }
}

// ---------------------------------------------------------------------------
// 3. Concurrency on one run
// ---------------------------------------------------------------------------

const PEOPLE: [&str; 8] = [
    "alice", "bruno", "chen", "emeka", "farah", "ingrid", "priya", "zoe",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clicks_on_one_run_never_lose_an_update() {
    let cfg = config();
    let runbook = &cfg.runbooks["workflow-release"];
    let phase = &runbook.phases[0];
    let required: Vec<_> = phase.items.iter().filter(|i| !i.optional).collect();
    assert!(
        required.len() >= 8,
        "the test wants a phase with many items"
    );
    // Every (person, role) pair that may sign the phase's gate.
    let signers: Vec<(PersonId, RoleId)> = phase
        .gate
        .signoffs
        .iter()
        .flat_map(|need| {
            cfg.directory.roles[&need.role]
                .members
                .iter()
                .map(|m| (m.clone(), need.role.clone()))
        })
        .collect();
    assert!(signers.len() >= 4, "the test wants several signers");

    for db in all_dbs().await {
        let kind = db.kind;
        let (engine, _clock) = engine(&db).await;
        let store = engine.store().clone();
        let pool = raw(&db).await;
        let id = start(&engine, kind, "alice", Some("workflow-release")).await;

        // One task per required item, each as a different person (cycling).
        let tasks: Vec<_> = required
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let engine = engine.clone();
                let who = PEOPLE[i % PEOPLE.len()];
                let action = done(&phase.id, &item.id);
                tokio::spawn(async move { click(&engine, who, id, &action, None).await })
            })
            .collect();
        for task in tasks {
            let reply = task.await.unwrap();
            assert!(reply.changed, "[{kind}] a click failed: {}", reply.text);
        }

        let run = load(&store, kind, id).await;
        assert_eq!(run.phase, phase.id, "[{kind}]");
        for (i, item) in required.iter().enumerate() {
            match run.item_state(&phase.id, &item.id) {
                ItemState::Done { by, .. } => assert_eq!(
                    by.as_str(),
                    PEOPLE[i % PEOPLE.len()],
                    "[{kind}] {} done by",
                    item.id
                ),
                other => panic!("[{kind}] item {} lost its update: {other:?}", item.id),
            }
        }
        assert_eq!(run.items.len(), required.len(), "[{kind}] item rows");

        let audit = store.audit_for_run(id).await.unwrap();
        let done_entries: Vec<_> = audit.iter().filter(|e| e.action == "item.done").collect();
        assert_eq!(
            done_entries.len(),
            required.len(),
            "[{kind}] one item.done per click"
        );
        for item in &required {
            let n = done_entries
                .iter()
                .filter(|e| e.detail.ends_with(&format!(": {}", item.text)))
                .count();
            assert_eq!(n, 1, "[{kind}] audit entries for {}", item.id);
        }
        let outbox = outbox_of(&pool, kind, id).await;
        let key = tminus::chat::keys::phase(id, &phase.id);
        // Nothing delivers here. PostgreSQL queues every click's card; on
        // SQLite each replaced the one still waiting (see `Tx::enqueue`).
        let cards_queued = |n: usize| if kind == "sqlite" { 1 } else { n };
        assert_eq!(
            count_key(&outbox, &key),
            cards_queued(1 + required.len()),
            "[{kind}] the phase card from start plus one update per click"
        );

        // N concurrent sign-offs by different members of the gate's roles.
        let tasks: Vec<_> = signers
            .iter()
            .map(|(who, role)| {
                let engine = engine.clone();
                let who = who.to_string();
                let action = sign(&phase.id, role.as_str());
                tokio::spawn(async move { click(&engine, &who, id, &action, None).await })
            })
            .collect();
        for task in tasks {
            let reply = task.await.unwrap();
            assert!(reply.changed, "[{kind}] a sign-off failed: {}", reply.text);
        }
        let run = load(&store, kind, id).await;
        let got: BTreeSet<(PersonId, RoleId)> = run
            .signoffs
            .iter()
            .map(|s| {
                assert_eq!(s.verdict, Verdict::Approved, "[{kind}] {s:?}");
                assert_eq!(s.phase, phase.id, "[{kind}] {s:?}");
                (s.person.clone(), s.role.clone())
            })
            .collect();
        assert_eq!(run.signoffs.len(), signers.len(), "[{kind}] sign-off rows");
        assert_eq!(
            got,
            signers.iter().cloned().collect::<BTreeSet<_>>(),
            "[{kind}] every sign-off kept"
        );
        assert!(
            run.gate_progress(phase).iter().all(|p| p.is_met()),
            "[{kind}] the gate is met"
        );
        assert_eq!(run.items.len(), required.len(), "[{kind}] items untouched");
        let audit = store.audit_for_run(id).await.unwrap();
        assert_eq!(
            audit
                .iter()
                .filter(|e| e.action == "signoff.approved")
                .count(),
            signers.len(),
            "[{kind}] one signoff.approved per sign-off"
        );
        let outbox = outbox_of(&pool, kind, id).await;
        assert_eq!(
            count_key(&outbox, &key),
            cards_queued(1 + required.len() + signers.len()),
            "[{kind}] one phase-card update per sign-off"
        );
        // Each update was decided on the state the one before it left: in
        // queue order the cards show 0, 1, 2, … items done, then 1, 2, …
        // approvals. A command working from a stale read would repeat a count.
        // On SQLite only the last, replacing the others, is left.
        let progress: Vec<(usize, usize)> = outbox
            .iter()
            .filter(|(k, _)| k.as_deref() == Some(key.as_str()))
            .map(|(_, m)| card_progress(&m.card))
            .collect();
        let mut expected: Vec<(usize, usize)> = (0..=required.len())
            .map(|n| (n, 0))
            .chain((1..=signers.len()).map(|n| (required.len(), n)))
            .collect();
        if kind == "sqlite" {
            expected.drain(..expected.len() - 1);
        }
        assert_eq!(progress, expected, "[{kind}] phase cards in queue order");
        pool.close().await;
    }
}

/// Two processes on one PostgreSQL (two engines, each with its own store
/// and pool) under a storm of clicks on one run: eight items, each clicked
/// done and undone 25 times in a row by its own client, the clients all at
/// once and each click sent to the two processes in turn. Each click is a
/// change only if it sees the one before it, so a lost update shows as a
/// refused click, a wrong final state or a missing audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_lose_no_update_in_a_click_storm() {
    // PostgreSQL only; `postgres_db` says when it skips, and fails under CI.
    let Some(db) = postgres_db().await else {
        return;
    };
    let cfg = config();
    let phase = &cfg.runbooks["workflow-release"].phases[0];
    let items = crate::helpers::first_items("workflow-release", 8);
    const CLICKS: usize = 25;
    let (first, _c1) = engine(&db).await;
    let (second, _c2) = engine(&db).await;
    let id = start(&first, "postgres", "alice", Some("workflow-release")).await;
    let tasks: Vec<_> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let engines = [first.clone(), second.clone()];
            let (phase, item) = (phase.id.clone(), item.clone());
            tokio::spawn(async move {
                for n in 0..CLICKS {
                    let action = if n % 2 == 0 {
                        done(&phase, &item)
                    } else {
                        Action::ItemUndo {
                            phase: phase.clone(),
                            item: item.clone(),
                        }
                    };
                    let reply = click(&engines[(i + n) % 2], "alice", id, &action, None).await;
                    assert!(
                        reply.changed,
                        "click {n} on {item} lost an update: {}",
                        reply.text
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let run = load(first.store(), "postgres", id).await;
    let audit = first.store().audit_for_run(id).await.unwrap();
    for item in &items {
        assert!(
            matches!(run.item_state(&phase.id, item), ItemState::Done { .. }),
            "{item}: an odd number of clicks leaves it done, got {:?}",
            run.item_state(&phase.id, item)
        );
        let text = &phase.items.iter().find(|i| &i.id == item).unwrap().text;
        let entries = audit
            .iter()
            .filter(|e| e.detail.ends_with(&format!(": {text}")) && e.action.starts_with("item."))
            .count();
        assert_eq!(entries, CLICKS, "{item}: one audit entry per click");
    }
}

// ---------------------------------------------------------------------------
// 4. Idempotency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_clicks_and_retried_requests_count_once() {
    for db in all_dbs().await {
        let kind = db.kind;
        let (engine, _clock) = engine(&db).await;
        let store = engine.store().clone();
        let pool = raw(&db).await;

        // A start delivered twice with the same request key makes one run.
        let first = engine
            .handle(
                &shell("alice"),
                start_cmd("web", "v1", Some("quickstart")),
                Some("evt-1"),
            )
            .await;
        assert!(first.changed, "[{kind}] {}", first.text);
        let second = engine
            .handle(
                &shell("alice"),
                start_cmd("web", "v1", Some("quickstart")),
                Some("evt-1"),
            )
            .await;
        assert!(!second.changed, "[{kind}] retried start: {}", second.text);
        let runs = store
            .recent_runs(Platform::Shell, CHANNEL, 10)
            .await
            .unwrap();
        assert_eq!(runs.len(), 1, "[{kind}] one run for one request key");
        let id = runs[0].id;

        // The same double delivery, concurrently.
        let (a, b) = tokio::join!(
            tokio::spawn({
                let engine = engine.clone();
                async move {
                    engine
                        .handle(
                            &shell("bruno"),
                            start_cmd("api", "v2", Some("quickstart")),
                            Some("evt-concurrent"),
                        )
                        .await
                }
            }),
            tokio::spawn({
                let engine = engine.clone();
                async move {
                    engine
                        .handle(
                            &shell("bruno"),
                            start_cmd("api", "v2", Some("quickstart")),
                            Some("evt-concurrent"),
                        )
                        .await
                }
            }),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            [a.changed, b.changed].iter().filter(|c| **c).count(),
            1,
            "[{kind}] exactly one of two concurrent deliveries starts a run: {a:?} / {b:?}"
        );
        let loser = if a.changed { &b } else { &a };
        assert!(
            loser.text.starts_with("Already started"),
            "[{kind}] the other delivery is recognised as a repeat: {}",
            loser.text
        );
        assert_eq!(
            store
                .recent_runs(Platform::Shell, CHANNEL, 10)
                .await
                .unwrap()
                .len(),
            2,
            "[{kind}]"
        );

        // The same click twice: the second changes nothing.
        let action = done("prepare", "tests");
        let r1 = click(&engine, "chen", id, &action, None).await;
        assert!(r1.changed, "[{kind}] {}", r1.text);
        let run_before = load(&store, kind, id).await;
        let audit_before = store.audit_for_run(id).await.unwrap();
        let outbox_before = outbox_of(&pool, kind, id).await;
        let r2 = click(&engine, "chen", id, &action, None).await;
        assert!(!r2.changed, "[{kind}] second click: {}", r2.text);
        // Even as someone else: done is done.
        let r3 = click(&engine, "bruno", id, &action, None).await;
        assert!(!r3.changed, "[{kind}] third click: {}", r3.text);
        assert_eq!(
            load(&store, kind, id).await,
            run_before,
            "[{kind}] state unchanged"
        );
        assert_eq!(
            store.audit_for_run(id).await.unwrap(),
            audit_before,
            "[{kind}] audit unchanged"
        );
        assert_eq!(
            outbox_of(&pool, kind, id).await,
            outbox_before,
            "[{kind}] outbox unchanged"
        );

        // A repeated sign-off counts once too.
        let id2 = store
            .run_by_number(Platform::Shell, CHANNEL, 2)
            .await
            .unwrap()
            .unwrap()
            .id;
        for (who, item) in [("bruno", "tests"), ("bruno", "notes")] {
            click_ok(&engine, kind, who, id2, done("prepare", item), None).await;
        }
        click_ok(&engine, kind, "bruno", id2, advance("prepare"), None).await;
        click_ok(&engine, kind, "chen", id2, sign("production", "qa"), None).await;
        let audit2 = store.audit_for_run(id2).await.unwrap();
        let again = click(&engine, "chen", id2, &sign("production", "qa"), None).await;
        assert!(!again.changed, "[{kind}] repeated sign-off: {}", again.text);
        assert_eq!(
            store.audit_for_run(id2).await.unwrap(),
            audit2,
            "[{kind}] audit unchanged after a repeated sign-off"
        );
        assert_eq!(load(&store, kind, id2).await.signoffs.len(), 1, "[{kind}]");

        // A click retried with the same request key after the state moved on
        // is recognised as the old request and changes nothing.
        let notes = done("prepare", "notes");
        let keyed = |key: &'static str| {
            let engine = engine.clone();
            let notes = notes.clone();
            async move {
                engine
                    .handle(
                        &shell("farah"),
                        Request::click(&buttons::encode(id, &notes), None).unwrap(),
                        Some(key),
                    )
                    .await
            }
        };
        let k1 = keyed("evt-2").await;
        assert!(k1.changed, "[{kind}] {}", k1.text);
        let undo = Action::ItemUndo {
            phase: "prepare".into(),
            item: "notes".into(),
        };
        click_ok(&engine, kind, "farah", id, undo, None).await;
        let audit_before = store.audit_for_run(id).await.unwrap();
        let k2 = keyed("evt-2").await;
        assert!(!k2.changed, "[{kind}] retried keyed click: {}", k2.text);
        assert_eq!(
            load(&store, kind, id).await.item_state("prepare", "notes"),
            &ItemState::Pending,
            "[{kind}] the retried delivery did not redo the item"
        );
        assert_eq!(
            store.audit_for_run(id).await.unwrap(),
            audit_before,
            "[{kind}] audit unchanged by the retried delivery"
        );
        pool.close().await;
    }
}

// ---------------------------------------------------------------------------
// 5. The audit log is append-only
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_refuses_updates_and_deletes() {
    for db in all_dbs().await {
        let kind = db.kind;
        let (engine, _clock) = engine(&db).await;
        let store = engine.store().clone();
        let id = start(&engine, kind, "alice", Some("quickstart")).await;
        click_ok(&engine, kind, "chen", id, done("prepare", "tests"), None).await;
        let before = store.audit_for_run(id).await.unwrap();
        assert_eq!(before.len(), 2, "[{kind}] entries to protect");

        let pool = raw(&db).await;
        for sql in [
            "UPDATE audit_log SET detail = 'x'",
            "UPDATE audit_log SET actor = 'mallory' WHERE action = 'run.started'",
            "DELETE FROM audit_log",
            "DELETE FROM audit_log WHERE action = 'item.done'",
        ] {
            match sqlx::query(sql).execute(&pool).await {
                Ok(done) => panic!("[{kind}] {sql:?} succeeded ({} rows)", done.rows_affected()),
                Err(e) => assert!(
                    e.to_string().contains("append-only"),
                    "[{kind}] {sql:?} failed for another reason: {e}"
                ),
            }
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 2, "[{kind}] rows kept");
        assert_eq!(
            store.audit_for_run(id).await.unwrap(),
            before,
            "[{kind}] entries unchanged"
        );

        // Appending still works.
        click_ok(&engine, kind, "chen", id, done("prepare", "notes"), None).await;
        assert_eq!(
            store.audit_for_run(id).await.unwrap().len(),
            3,
            "[{kind}] append"
        );
        pool.close().await;
    }
}

/// `DELETE` is refused by a row trigger, but PostgreSQL's `TRUNCATE` fires no
/// row triggers: without a `BEFORE TRUNCATE` statement trigger it empties the
/// "append-only" log. (SQLite has no TRUNCATE; its `DELETE FROM` without a
/// WHERE clause is covered above.)
#[tokio::test]
async fn the_audit_log_refuses_truncate() {
    // PostgreSQL only; `postgres_db` says when it skips, and fails under CI.
    if let Some(db) = postgres_db().await {
        let kind = db.kind;
        let (engine, _clock) = engine(&db).await;
        let id = start(&engine, kind, "alice", Some("quickstart")).await;
        let pool = raw(&db).await;
        let truncated = sqlx::query("TRUNCATE audit_log").execute(&pool).await;
        let left = engine.store().audit_for_run(id).await.unwrap().len();
        assert!(
            truncated.is_err(),
            "[{kind}] TRUNCATE audit_log succeeded; {left} entries left"
        );
        assert_eq!(left, 1, "[{kind}] entries kept");
        pool.close().await;
    }
}

// ---------------------------------------------------------------------------
// 6. Timers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn timers_are_scheduled_once_leased_and_fired_once() {
    for db in all_dbs().await {
        let kind = db.kind;
        let store = Store::connect(&db.url).await.expect("connect");
        let now = t("2026-11-23T09:00:00Z");
        let due = now + Duration::minutes(10);
        let reminder = TimerKind::SignoffReminder {
            run: RunId(7),
            phase: "staging".into(),
            seq: 1,
        };

        let mut tx = store.begin().await.unwrap();
        tx.schedule(&reminder, due).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.schedule(&reminder, due + Duration::minutes(30))
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let pending = store.pending_timers().await.unwrap();
        assert_eq!(pending.len(), 1, "[{kind}] one timer for one key");
        assert_eq!(pending[0].kind, reminder, "[{kind}]");
        assert_eq!(pending[0].due_at, due, "[{kind}] the first schedule wins");
        assert_eq!(store.next_timer_due().await.unwrap(), Some(due), "[{kind}]");
        let id = pending[0].id;

        let lease = Duration::seconds(60);
        assert!(
            store
                .claim_timers("a", due - Duration::seconds(1), lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "[{kind}] not claimable before it is due"
        );
        let claimed = store.claim_timers("a", due, lease, 10).await.unwrap();
        assert_eq!(
            claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![id],
            "[{kind}] a claims it"
        );
        assert_eq!(claimed[0].kind, reminder, "[{kind}]");
        assert!(
            store
                .claim_timers("b", due, lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "[{kind}] leased to a"
        );
        assert!(
            store
                .claim_timers("b", due + Duration::seconds(30), lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "[{kind}] still leased to a"
        );
        let reclaimed = store
            .claim_timers("b", due + Duration::seconds(61), lease, 10)
            .await
            .unwrap();
        assert_eq!(
            reclaimed.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![id],
            "[{kind}] b takes it over once a's lease ran out"
        );
        assert_eq!(
            store.pending_timers().await.unwrap().len(),
            1,
            "[{kind}] claimed is not fired"
        );

        // Marking fired in a transaction that rolls back does not count.
        let fired_at = due + Duration::seconds(62);
        let mut tx = store.begin().await.unwrap();
        assert!(tx.mark_fired(id, fired_at).await.unwrap(), "[{kind}]");
        drop(tx);
        assert_eq!(
            store.pending_timers().await.unwrap().len(),
            1,
            "[{kind}] rolled back"
        );

        let mut tx = store.begin().await.unwrap();
        assert!(
            tx.mark_fired(id, fired_at).await.unwrap(),
            "[{kind}] first mark"
        );
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert!(
            !tx.mark_fired(id, fired_at).await.unwrap(),
            "[{kind}] second mark"
        );
        tx.commit().await.unwrap();

        assert!(
            store.pending_timers().await.unwrap().is_empty(),
            "[{kind}] fired timers are not pending"
        );
        assert_eq!(store.next_timer_due().await.unwrap(), None, "[{kind}]");
        assert!(
            store
                .claim_timers("c", due + Duration::hours(5), lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "[{kind}] fired timers are never claimed again"
        );

        // The key is spent: scheduling the same firing again does nothing.
        let mut tx = store.begin().await.unwrap();
        tx.schedule(&reminder, due + Duration::hours(1))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(
            store.pending_timers().await.unwrap().is_empty(),
            "[{kind}] a fired key is not rescheduled"
        );

        // Claims come soonest first and respect the limit.
        let later = |seq: u32| TimerKind::SignoffReminder {
            run: RunId(7),
            phase: "staging".into(),
            seq,
        };
        let mut tx = store.begin().await.unwrap();
        tx.schedule(&later(4), now + Duration::minutes(40))
            .await
            .unwrap();
        tx.schedule(&later(2), now + Duration::minutes(20))
            .await
            .unwrap();
        tx.schedule(&later(3), now + Duration::minutes(30))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let pending: Vec<TimerKind> = store
            .pending_timers()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect();
        assert_eq!(pending, vec![later(2), later(3), later(4)], "[{kind}]");
        let first_two: Vec<TimerKind> = store
            .claim_timers("d", now + Duration::hours(1), lease, 2)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect();
        assert_eq!(first_two, vec![later(2), later(3)], "[{kind}] limit 2");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 7. Exactly-once firing after downtime
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reminder_fires_once_after_downtime_even_with_two_schedulers() {
    for db in all_dbs().await {
        let kind = db.kind;
        let (engine, clock) = engine(&db).await;
        let store = engine.store().clone();
        let pool = raw(&db).await;
        // web-service: a gated first phase and a 30-minute reminder.
        let runbook = &engine.config().runbooks["web-service"];
        let every = runbook
            .signoff_reminder
            .expect("web-service has a reminder")
            .to_chrono();
        let id = start(&engine, kind, "alice", Some("web-service")).await;
        let first_phase = runbook.phases[0].id.clone();
        let first = TimerKind::SignoffReminder {
            run: id,
            phase: first_phase.clone(),
            seq: 1,
        };
        let pending = store.pending_timers().await.unwrap();
        assert_eq!(
            pending.iter().map(|t| &t.kind).collect::<Vec<_>>(),
            vec![&first],
            "[{kind}] start schedules the first reminder"
        );
        let first_timer = pending[0].clone();

        // Down for ten hours: twenty reminder periods go by.
        let now = clock.advance(Dur::from_mins(600));
        let s1 = Scheduler::new(engine.clone());
        let s2 = Scheduler::new(engine.clone());
        let (a, b) = tokio::join!(s1.run_due(now), s2.run_due(now));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a + b, 1, "[{kind}] one firing between the two ({a} + {b})");

        let outbox = outbox_of(&pool, kind, id).await;
        let reminders: Vec<&Outgoing> = outbox
            .iter()
            .map(|(_, m)| m)
            .filter(|m| m.card.title.contains("has waited"))
            .collect();
        assert_eq!(reminders.len(), 1, "[{kind}] one reminder: {reminders:?}");
        assert!(
            matches!(&reminders[0].to, Destination::Thread { channel, .. } if channel == CHANNEL),
            "[{kind}] in the run's thread: {:?}",
            reminders[0].to
        );
        let audit = store.audit_for_run(id).await.unwrap();
        assert_eq!(
            audit.iter().filter(|e| e.action == "reminder.sent").count(),
            1,
            "[{kind}] one reminder in the audit log"
        );

        let fired: Option<i64> =
            sqlx::query_scalar("SELECT fired_at FROM timers WHERE timer_key = $1")
                .bind(first.key())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            fired,
            Some(now.timestamp_millis()),
            "[{kind}] the due timer is marked fired"
        );

        let pending = store.pending_timers().await.unwrap();
        assert_eq!(pending.len(), 1, "[{kind}] one next reminder: {pending:?}");
        assert_eq!(
            pending[0].kind,
            TimerKind::SignoffReminder {
                run: id,
                phase: first_phase.clone(),
                seq: 2
            },
            "[{kind}]"
        );
        assert!(pending[0].due_at > now, "[{kind}] the next one is ahead");
        assert_eq!(pending[0].due_at, now + every, "[{kind}]");

        // Stepping again at the same moment does nothing more.
        assert_eq!(s1.run_due(now).await.unwrap(), 0, "[{kind}]");
        // Nor does a claimant whose lease ran out finishing late: firing the
        // already fired timer again changes nothing.
        engine
            .fire(&first_timer)
            .await
            .unwrap_or_else(|e| panic!("[{kind}] late fire: {e:#}"));
        let outbox_again = outbox_of(&pool, kind, id).await;
        assert_eq!(
            outbox_again.len(),
            outbox.len(),
            "[{kind}] nothing new queued"
        );
        assert_eq!(store.pending_timers().await.unwrap(), pending, "[{kind}]");
        pool.close().await;
    }
}

// ---------------------------------------------------------------------------
// 8. Outbox lanes
// ---------------------------------------------------------------------------

fn message(platform: Platform, channel: &str, title: &str) -> Outgoing {
    Outgoing {
        platform,
        to: Destination::Channel {
            channel: channel.into(),
        },
        key: None,
        card: Card::new(title),
    }
}

#[tokio::test]
async fn outbox_lanes_keep_their_order() {
    for db in all_dbs().await {
        let kind = db.kind;
        let store = Store::connect(&db.url).await.expect("connect");
        let pool = raw(&db).await;
        let t0 = t("2026-11-23T09:00:00Z");
        let secs = |s: i64| t0 + Duration::seconds(s);
        let lease = Duration::seconds(30);

        let mut tx = store.begin().await.unwrap();
        for (platform, channel, title) in [
            (Platform::Shell, "#a", "A1"),
            (Platform::Shell, "#b", "B1"),
            (Platform::Shell, "#a", "A2"),
            (Platform::Slack, "#a", "S1"),
            (Platform::Shell, "#a", "A3"),
            (Platform::Shell, "#b", "B2"),
        ] {
            tx.enqueue(None, &message(platform, channel, title), t0)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(store.outbox_depth().await.unwrap(), 6, "[{kind}]");

        let claim = |owner: &'static str, at: DateTime<Utc>| {
            let store = store.clone();
            async move {
                store
                    .claim_messages(Platform::Shell, owner, at, lease, 10)
                    .await
                    .unwrap()
            }
        };
        let titles = |msgs: &[tminus::store::ClaimedMessage]| -> Vec<String> {
            msgs.iter().map(|m| m.message.card.title.clone()).collect()
        };

        // Only the head of each lane.
        let c1 = claim("w1", t0).await;
        assert_eq!(titles(&c1), ["A1", "B1"], "[{kind}] heads of the lanes");
        assert!(c1.iter().all(|m| m.attempts == 0), "[{kind}]");
        assert_eq!(c1[0].created_at, t0, "[{kind}]");
        assert_eq!(
            c1[0].message,
            message(Platform::Shell, "#a", "A1"),
            "[{kind}] the message round-trips"
        );
        let (a1, b1) = (c1[0].id, c1[1].id);
        // While the heads are leased, nothing else of their lanes moves.
        assert!(
            claim("w2", t0).await.is_empty(),
            "[{kind}] lanes blocked by live leases"
        );
        assert!(
            claim("w2", secs(29)).await.is_empty(),
            "[{kind}] leases still live"
        );
        // The other platform's lane is separate.
        let slack = store
            .claim_messages(Platform::Slack, "w1", t0, lease, 10)
            .await
            .unwrap();
        assert_eq!(titles(&slack), ["S1"], "[{kind}] slack lane");

        // A dead worker's leases run out and another worker takes the heads.
        let c2 = claim("w2", secs(31)).await;
        assert_eq!(
            c2.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![a1, b1],
            "[{kind}] the same heads again after the leases expired"
        );

        store.mark_delivered(b1, secs(32)).await.unwrap();
        assert_eq!(
            titles(&claim("w2", secs(32)).await),
            ["B2"],
            "[{kind}] lane B moves on; lane A is still held by A1's lease"
        );
        store.mark_delivered(a1, secs(33)).await.unwrap();
        let c3 = claim("w2", secs(33)).await;
        assert_eq!(titles(&c3), ["A2"], "[{kind}] after A1 comes A2");
        let a2 = c3[0].id;
        let b2 = store
            .claim_messages(Platform::Shell, "w3", secs(100), lease, 10)
            .await
            .unwrap();
        // At t0+100s A2's and B2's leases (from t0+33s and t0+32s) are over.
        assert_eq!(titles(&b2), ["A2", "B2"], "[{kind}]");
        store.mark_delivered(b2[1].id, secs(100)).await.unwrap();

        // A failed attempt puts A2 back for later; A3 waits behind it.
        let depth = store.outbox_depth().await.unwrap();
        store
            .retry_later(a2, secs(600), "rate limited", false)
            .await
            .unwrap();
        assert_eq!(
            store.outbox_depth().await.unwrap(),
            depth,
            "[{kind}] retry keeps it pending"
        );
        assert!(
            claim("w1", secs(101)).await.is_empty(),
            "[{kind}] not claimable before its retry time, and A3 stays behind it"
        );
        assert!(claim("w1", secs(599)).await.is_empty(), "[{kind}]");
        let c4 = claim("w1", secs(600)).await;
        assert_eq!(titles(&c4), ["A2"], "[{kind}] A2 again at its retry time");
        assert_eq!(c4[0].attempts, 1, "[{kind}] attempts counted");

        // Giving up: out of the pending set, but kept with why.
        store
            .mark_failed(a2, secs(601), "channel archived")
            .await
            .unwrap();
        assert_eq!(
            store.outbox_depth().await.unwrap(),
            depth - 1,
            "[{kind}] a failed message is no longer pending"
        );
        let (attempts, failed_at, last_error): (i64, Option<i64>, Option<String>) =
            sqlx::query_as("SELECT attempts, failed_at, last_error FROM outbox WHERE id = $1")
                .bind(a2)
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|e| panic!("[{kind}] the failed message is kept: {e}"));
        assert_eq!(attempts, 2, "[{kind}]");
        assert_eq!(failed_at, Some(secs(601).timestamp_millis()), "[{kind}]");
        assert_eq!(last_error.as_deref(), Some("channel archived"), "[{kind}]");
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(total, 6, "[{kind}] nothing is deleted");

        // The lane goes on with A3.
        assert_eq!(
            titles(&claim("w1", secs(601)).await),
            ["A3"],
            "[{kind}] after a failed message the lane goes on"
        );
        // Left pending: A3 (claimed) and S1 (claimed).
        assert_eq!(store.outbox_depth().await.unwrap(), 2, "[{kind}]");
        pool.close().await;
        store.close().await;
    }
}

/// A delivered message's outcome and the claim of its lane's next message
/// are one write: the next one comes back claimed (so no other worker
/// takes it), the other lanes stay as they were, and a lane with nothing
/// due hands over nothing.
#[tokio::test]
async fn a_delivered_message_hands_its_lane_to_the_next_one() {
    for db in all_dbs().await {
        let kind = db.kind;
        let store = Store::connect(&db.url).await.expect("connect");
        let t0 = t("2026-11-23T09:00:00Z");
        let lease = Duration::seconds(30);
        let mut tx = store.begin().await.unwrap();
        for (channel, title) in [("#a", "A1"), ("#b", "B1"), ("#a", "A2"), ("#a", "A3")] {
            tx.enqueue(None, &message(Platform::Shell, channel, title), t0)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let heads = store
            .claim_messages(Platform::Shell, "w1", t0, lease, 10)
            .await
            .unwrap();
        let (a1, b1) = (&heads[0], &heads[1]);
        assert_eq!(a1.message.card.title, "A1", "[{kind}]");

        let a2 = store
            .delivered_then_next(a1.id, Platform::Shell, &a1.lane, "w1", t0, lease)
            .await
            .unwrap()
            .expect("A2 follows A1");
        assert_eq!(a2.message.card.title, "A2", "[{kind}]");
        assert_eq!(a2.claimed_at, t0, "[{kind}]");
        assert_eq!(
            store.outbox_depth().await.unwrap(),
            3,
            "[{kind}] A1 delivered"
        );
        assert!(
            store
                .claim_messages(Platform::Shell, "w2", t0, lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "[{kind}] A2 and B1 are claimed, so neither lane moves for another worker"
        );

        // B1's lane has nothing behind it.
        let after_b1 = store
            .delivered_then_next(b1.id, Platform::Shell, &b1.lane, "w1", t0, lease)
            .await
            .unwrap();
        assert!(after_b1.is_none(), "[{kind}]");

        // A2 must wait for a retry; A3 waits behind it, and when A2 is
        // through later, A3 comes with it.
        store
            .retry_later(a2.id, t0 + Duration::seconds(60), "rate limited", false)
            .await
            .unwrap();
        let later = t0 + Duration::seconds(61);
        let again = store
            .claim_messages(Platform::Shell, "w2", later, lease, 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "[{kind}]");
        assert_eq!(again[0].id, a2.id, "[{kind}] A2 again, A3 still behind it");
        let a3 = store
            .delivered_then_next(a2.id, Platform::Shell, &a2.lane, "w2", later, lease)
            .await
            .unwrap()
            .expect("A3 follows A2");
        assert_eq!(a3.message.card.title, "A3", "[{kind}]");
        assert!(
            store
                .delivered_then_next(a3.id, Platform::Shell, &a3.lane, "w2", later, lease)
                .await
                .unwrap()
                .is_none(),
            "[{kind}]"
        );
        assert_eq!(store.outbox_depth().await.unwrap(), 0, "[{kind}]");
    }
}

#[tokio::test]
async fn a_stale_card_edit_is_never_sent() {
    for db in all_dbs().await {
        let kind = db.kind;
        let store = Store::connect(&db.url).await.expect("connect");
        let t0 = t("2026-11-23T09:00:00Z");
        let keyed = |title: &str| Outgoing {
            key: Some("run:1:phase:pre".into()),
            ..message(Platform::Shell, "#a", title)
        };
        let enqueue = |msg: Outgoing| {
            let store = store.clone();
            async move {
                let mut tx = store.begin().await.unwrap();
                tx.enqueue(None, &msg, t0).await.unwrap();
                tx.commit().await.unwrap();
            }
        };
        enqueue(keyed("v1")).await;
        enqueue(message(Platform::Shell, "#a", "notice")).await;
        enqueue(keyed("v2")).await;
        let lease = Duration::seconds(30);
        let mut sent = Vec::new();
        loop {
            let next = store
                .claim_messages(Platform::Shell, "w1", t0, lease, 10)
                .await
                .unwrap();
            let Some(m) = next.first() else { break };
            sent.push(m.message.card.title.clone());
            if m.message.card.title == "notice" {
                // A newer edit arriving while v2 waits behind the notice.
                enqueue(keyed("v3")).await;
            }
            if let Some(key) = &m.message.key {
                // As a delivery worker does once the platform gave an id.
                store
                    .remember_message(key, Platform::Shell, "#a", "ref-1", None, t0)
                    .await
                    .unwrap();
            }
            store.mark_delivered(m.id, t0).await.unwrap();
        }
        // SQLite: v2 replaced v1 while it waited. PostgreSQL: the card's
        // first post keeps its place before the notice, and v2, an edit
        // with v3 behind it, is skipped at claim time. Never a stale card.
        let (want, superseded): (&[&str], i64) = if kind == "sqlite" {
            (&["v2", "notice", "v3"], 0)
        } else {
            (&["v1", "notice", "v3"], 1)
        };
        assert_eq!(sent, want, "[{kind}]");
        assert_eq!(store.outbox_depth().await.unwrap(), 0, "[{kind}]");
        let pool = raw(&db).await;
        let skipped: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE last_error = 'superseded by a newer edit' \
             AND delivered_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(skipped, superseded, "[{kind}] kept, marked as superseded");
        pool.close().await;
        store.close().await;
    }
}

/// A claim that ran out, or an attempt that got no answer, may have reached
/// the platform: the message comes back marked uncertain since that attempt
/// began, and keeps the content it was sent with — a newer edit neither
/// replaces it (SQLite) nor supersedes it (PostgreSQL) — so the lookup
/// before its next post searches for what was sent.
#[tokio::test]
async fn an_unanswered_attempt_comes_back_uncertain_with_what_it_sent() {
    for db in all_dbs().await {
        let kind = db.kind;
        let store = Store::connect(&db.url).await.expect("connect");
        let t0 = t("2026-11-23T09:00:00Z");
        let secs = |s: i64| t0 + Duration::seconds(s);
        let lease = Duration::seconds(30);
        let key = "run:7:phase:pre";
        let keyed = |title: &str| Outgoing {
            key: Some(key.into()),
            ..message(Platform::Slack, "#a", title)
        };
        let enqueue = |msg: Outgoing, at: DateTime<Utc>| {
            let store = store.clone();
            async move {
                let mut tx = store.begin().await.unwrap();
                tx.enqueue(None, &msg, at).await.unwrap();
                tx.commit().await.unwrap();
            }
        };
        let claim = |owner: &'static str, at: DateTime<Utc>| {
            let store = store.clone();
            async move {
                store
                    .claim_messages(Platform::Slack, owner, at, lease, 10)
                    .await
                    .unwrap()
            }
        };
        // Part 0 of the card is on the platform already; this edit adds a part.
        store
            .remember_message(key, Platform::Slack, "#a", "ts-1", None, t0)
            .await
            .unwrap();
        enqueue(keyed("v1"), t0).await;
        let first = claim("w1", secs(1)).await;
        assert_eq!(first.len(), 1, "[{kind}]");
        assert_eq!(
            first[0].uncertain_since, None,
            "[{kind}] a first attempt is not uncertain"
        );
        assert_eq!(first[0].claimed_at, secs(1), "[{kind}]");
        let id = first[0].id;

        // w1 dies inside its call; a newer edit arrives after its lease ran out.
        enqueue(keyed("v2"), secs(40)).await;
        let again = claim("w2", secs(41)).await;
        assert_eq!(again.len(), 1, "[{kind}]");
        assert_eq!(again[0].id, id, "[{kind}] the same message, not skipped");
        assert_eq!(
            again[0].message.card.title, "v1",
            "[{kind}] with what was sent"
        );
        assert_eq!(
            again[0].uncertain_since,
            Some(secs(1)),
            "[{kind}] uncertain since the claim that ran out began"
        );
        // This attempt gets no answer either: still uncertain since the first.
        store
            .retry_later(id, secs(50), "no answer", true)
            .await
            .unwrap();
        enqueue(keyed("v3"), secs(45)).await;
        let third = claim("w2", secs(50)).await;
        assert_eq!(
            (
                third[0].id,
                third[0].message.card.title.as_str(),
                third[0].uncertain_since
            ),
            (id, "v1", Some(secs(1))),
            "[{kind}]"
        );
        store.mark_delivered(id, secs(51)).await.unwrap();

        // The newest edit follows, on its own footing. On PostgreSQL v2 is
        // skipped for v3; on SQLite v3 replaced v2 while it waited.
        let next = claim("w2", secs(52)).await;
        assert_eq!(next.len(), 1, "[{kind}]");
        assert_eq!(next[0].message.card.title, "v3", "[{kind}]");
        assert_eq!(next[0].uncertain_since, None, "[{kind}]");
        // An unanswered attempt of a fresh claim: uncertain since that claim.
        store
            .retry_later(next[0].id, secs(60), "HTTP 502", true)
            .await
            .unwrap();
        let retried = claim("w2", secs(60)).await;
        assert_eq!(retried[0].uncertain_since, Some(secs(52)), "[{kind}]");
        // An answered failure leaves a message as it was.
        store
            .retry_later(retried[0].id, secs(70), "rate limited", false)
            .await
            .unwrap();
        let later = claim("w2", secs(70)).await;
        assert_eq!(later[0].uncertain_since, Some(secs(52)), "[{kind}]");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_deliver_each_lane_once_and_in_order() {
    const LANES: [&str; 3] = ["#a", "#b", "#c"];
    const PER_LANE: usize = 10;
    for db in all_dbs().await {
        let kind = db.kind;
        let store = Store::connect(&db.url).await.expect("connect");
        let now = t("2026-11-23T09:00:00Z");
        let mut tx = store.begin().await.unwrap();
        for n in 1..=PER_LANE {
            for lane in LANES {
                let msg = message(Platform::Shell, lane, &format!("{lane}-{n:02}"));
                tx.enqueue(None, &msg, now).await.unwrap();
            }
        }
        tx.commit().await.unwrap();

        // Four workers claim and deliver until nothing is left. A message is
        // recorded before it is marked delivered, and the next one of its
        // lane cannot be claimed before that, so the record is the lane's
        // delivery order.
        let delivered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                let delivered = delivered.clone();
                tokio::spawn(async move {
                    let owner = format!("worker-{w}");
                    loop {
                        let claimed = store
                            .claim_messages(Platform::Shell, &owner, now, Duration::seconds(60), 2)
                            .await
                            .unwrap();
                        for m in &claimed {
                            delivered
                                .lock()
                                .unwrap()
                                .push((m.message.lane(), m.message.card.title.clone()));
                            store.mark_delivered(m.id, now).await.unwrap();
                        }
                        if claimed.is_empty() {
                            if store.outbox_depth().await.unwrap() == 0 {
                                return;
                            }
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let delivered = delivered.lock().unwrap().clone();
        assert_eq!(
            delivered.len(),
            LANES.len() * PER_LANE,
            "[{kind}] every message delivered once: {delivered:?}"
        );
        for lane in LANES {
            let got: Vec<&str> = delivered
                .iter()
                .filter(|(l, _)| l == lane)
                .map(|(_, title)| title.as_str())
                .collect();
            let want: Vec<String> = (1..=PER_LANE).map(|n| format!("{lane}-{n:02}")).collect();
            assert_eq!(got, want, "[{kind}] lane {lane} in order, each once");
        }
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 9. Request keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn first_time_is_true_once_per_committed_key() {
    for db in all_dbs().await {
        let kind = db.kind;
        let store = Store::connect(&db.url).await.expect("connect");
        let now = t("2026-11-23T09:00:00Z");

        let mut tx = store.begin().await.unwrap();
        assert!(tx.first_time("k", now).await.unwrap(), "[{kind}] first");
        assert!(
            !tx.first_time("k", now).await.unwrap(),
            "[{kind}] same transaction"
        );
        tx.commit().await.unwrap();

        let mut tx = store.begin().await.unwrap();
        assert!(
            !tx.first_time("k", now).await.unwrap(),
            "[{kind}] next transaction"
        );
        assert!(
            tx.first_time("k2", now).await.unwrap(),
            "[{kind}] another key"
        );
        tx.commit().await.unwrap();

        // A key recorded in a transaction that rolls back was never handled.
        let mut tx = store.begin().await.unwrap();
        assert!(tx.first_time("k3", now).await.unwrap(), "[{kind}]");
        drop(tx);
        let mut tx = store.begin().await.unwrap();
        assert!(
            tx.first_time("k3", now).await.unwrap(),
            "[{kind}] after rollback"
        );
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert!(!tx.first_time("k3", now).await.unwrap(), "[{kind}]");
        assert!(!tx.first_time("k2", now).await.unwrap(), "[{kind}]");
        tx.commit().await.unwrap();
        store.close().await;
    }
}

/// A reason typed into a button's dialog has the limits of a typed
/// command: too long, or holding a control character, and the click is
/// refused with the limit named and the run left as it was.
#[tokio::test]
async fn a_dialog_reason_past_its_limit_is_refused_and_changes_nothing() {
    let db = crate::helpers::sqlite_db();
    let (engine, _clock) = engine(&db).await;
    let id = start(&engine, "sqlite", "alice", Some("quickstart")).await;
    let abort = Action::Abort { reason: None };
    let long = "x".repeat(501);
    for (reason, expected) in [
        (long.as_str(), "under 500 characters"),
        ("stop\u{0}now", "control or invisible"),
        ("\u{202E}gnorw", "control or invisible"),
    ] {
        let reply = click(&engine, "alice", id, &abort, Some(reason)).await;
        assert!(
            reply.refused && reply.text.contains(expected),
            "{reason:?}: {}",
            reply.text
        );
    }
    let run = engine.store().run(id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Active, "the run was not aborted");
    let reply = click(&engine, "alice", id, &abort, Some("wrong version")).await;
    assert!(reply.changed, "{}", reply.text);
}
