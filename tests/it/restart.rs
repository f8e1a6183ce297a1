//! Crash safety: a `tminus shell` killed with SIGKILL between commands
//! loses nothing — runs, sign-offs, audit entries, queued messages and
//! timers are all there when it starts again — and the timer that fell due
//! while it was down fires once.

use sqlx::Row;

use crate::helpers::{all_dbs, config, ShellSession};

/// Everything durable, as rows of text, in a stable order.
async fn snapshot(url: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url)
        .await
        .expect("connect for a snapshot");
    let mut rows = Vec::new();
    for (table, sql) in [
        ("runs", "SELECT id, number, status, phase, t0, CAST(ended_at AS TEXT) AS e FROM runs ORDER BY id"),
        ("items", "SELECT run_id, phase, item, state, by_person, at FROM run_items ORDER BY run_id, phase, item"),
        ("signoffs", "SELECT run_id, phase, role, person, verdict, COALESCE(reason, '') AS reason, at FROM signoffs ORDER BY run_id, phase, role, person"),
        ("audit", "SELECT id, actor, action, detail, at FROM audit_log ORDER BY id"),
        ("outbox", "SELECT id, channel, payload, CAST(delivered_at AS TEXT) AS d FROM outbox ORDER BY id"),
        ("timers", "SELECT id, timer_key, due_at, CAST(fired_at AS TEXT) AS f FROM timers ORDER BY id"),
    ] {
        for row in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await.expect(table) {
            let cells: Vec<String> = (0..row.len())
                .map(|i| {
                    row.try_get::<Option<String>, _>(i)
                        .map(|v| v.unwrap_or_default())
                        .or_else(|_| row.try_get::<Option<i64>, _>(i).map(|v| v.map_or(String::new(), |n| n.to_string())))
                        .unwrap_or_else(|e| panic!("{table} column {i}: {e}"))
                })
                .collect();
            rows.push(format!("{table}: {}", cells.join(" | ")));
        }
    }
    pool.close().await;
    rows
}

#[tokio::test]
async fn sigkill_between_commands_loses_nothing_and_overdue_timers_fire_once() {
    let config = config();
    let runbook = config
        .runbooks
        .get("quickstart")
        .expect("quickstart runbook");
    let reminder = runbook
        .signoff_reminder
        .expect("quickstart reminds about sign-offs");
    // Quickstart: a first phase without a gate, then a gated one.
    assert!(runbook.phases[0].gate.is_empty() && !runbook.phases[1].gate.is_empty());
    let role = runbook.phases[1]
        .gate
        .signoffs
        .iter()
        .filter_map(|need| config.directory.role(&need.role))
        .find(|r| r.members.iter().any(|m| m.as_str() != "alice"))
        .expect("a role with a member other than alice");
    let signer = role
        .members
        .iter()
        .find(|m| m.as_str() != "alice")
        .unwrap()
        .clone();

    for db in all_dbs().await {
        let mut s = ShellSession::start(&db.url, "alice");
        s.send("/deploy start billing v3.1.0 --runbook quickstart");
        for item in &runbook.phases[0].items {
            if item.optional {
                s.press("N/A: ", Some("no flag this time"));
            } else {
                s.press("Done: ", None);
            }
        }
        s.press("Advance to", None);
        s.press("Done: ", None);
        s.as_person(signer.as_str());
        let out = s.press(&format!("Sign off as {}", role.name), None);
        assert!(out.contains("signed off"), "{out}");
        s.as_person("alice");
        s.send("/deploy start billing v3.1.1 --runbook quickstart");
        let before = snapshot(&db.url).await;
        for table in [
            "runs:",
            "items:",
            "signoffs:",
            "audit:",
            "outbox:",
            "timers:",
        ] {
            assert!(
                before.iter().any(|r| r.starts_with(table)),
                "{}: no {table} rows: {before:#?}",
                db.kind
            );
        }
        s.kill();

        let after = snapshot(&db.url).await;
        assert_eq!(before, after, "{}: state changed across SIGKILL", db.kind);

        // Started again: the run is as it was, and the reminder that fell
        // due while the process was down fires once per run.
        let mut s = ShellSession::start(&db.url, "alice");
        let status = s.send("/deploy status 1");
        assert!(status.contains("✅"), "{}: {status}", db.kind);
        assert!(
            status.contains(&format!("✅ {}", config.directory.name(&signer))),
            "{}: {status}",
            db.kind
        );
        let waited = s.send(&format!(
            "wait {}",
            tminus::domain::Dur::from_millis(reminder.millis() * 3 / 2)
        ));
        // Run 1 waits on its gate; run 2 is in a phase without one.
        assert_eq!(
            waited.matches("has waited").count(),
            1,
            "{}: one reminder:\n{waited}",
            db.kind
        );
        s.quit();

        // Nothing was lost or doubled by the restart: the rows from before
        // are all still there, unchanged.
        let last = snapshot(&db.url).await;
        for row in before
            .iter()
            .filter(|r| !r.starts_with("outbox:") && !r.starts_with("timers:"))
        {
            assert!(last.contains(row), "{}: lost {row}", db.kind);
        }
    }
}
