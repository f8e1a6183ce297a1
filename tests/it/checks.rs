//! Items' automated HTTP checks, in the shell against a probe target on
//! 127.0.0.1: a check that passes marks its item done, one that fails (an
//! error status, or no answer within its time-out) says why on the card and
//! keeps the phase from being left, and "Check again" runs them once more.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tminus::domain::{ItemState, AUTOMATED_CHECK};
use tminus::store::Store;

use crate::helpers::{all_dbs, config_with, ShellSession};
use crate::shell::STARTER;

/// A target whose `/flaky` answers with the status set in `status`, whose
/// `/ok` always answers 200 and whose `/slow` answers after 3 seconds.
async fn target(status: Arc<AtomicU16>) -> String {
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/flaky",
            get(|State(s): State<Arc<AtomicU16>>| async move {
                StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .with_state(status);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn runbook(base: &str) -> String {
    format!(
        r#"name = "Checked release"

[[phases]]
id = "verify"
title = "Verify staging"
  [[phases.items]]
  id = "health"
  text = "Health endpoint answers"
  check = {{ url = "{base}/ok", expect_status = 200, timeout = "2s" }}
  [[phases.items]]
  id = "api"
  text = "API answers"
  check = {{ url = "{base}/flaky", expect_status = 200, timeout = "2s" }}
  [[phases.items]]
  id = "search"
  text = "Search answers"
  check = {{ url = "{base}/slow", expect_status = 200, timeout = "500ms" }}

[[phases]]
id = "ship"
title = "Ship it"
  [[phases.items]]
  id = "deploy"
  text = "Deploy"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn item_checks_pass_fail_and_time_out_on_the_card_and_gate_the_phase() {
    for db in all_dbs().await {
        let status = Arc::new(AtomicU16::new(503));
        let base = target(status.clone()).await;
        let dir = config_with("", &[("checked", &runbook(&base))]);
        let mut s = ShellSession::start_with(&db.url, STARTER, dir.path());
        let out = s.send("/deploy start shop v1 --runbook checked");
        let kind = db.kind;
        // The phase opened: its checks ran and the card shows each result.
        assert!(
            out.contains("✅ Health endpoint answers — automated check"),
            "{kind}: a pass marks the item done:\n{out}"
        );
        assert!(out.contains("✅ passed: HTTP 200 in "), "{kind}:\n{out}");
        assert!(
            out.contains("❌ failing: HTTP 503, expected 200"),
            "{kind}: the failing status is shown:\n{out}"
        );
        assert!(
            out.contains("❌ failing: no answer within 500ms"),
            "{kind}: the time-out is shown:\n{out}"
        );
        assert!(
            out.contains("❌ Automated check failed: API answers — HTTP 503"),
            "{kind}: the thread is told when a check starts failing:\n{out}"
        );
        assert!(s.button("Check again").is_some(), "{kind}: {:?}", s.buttons);

        // Failing checks block the phase like undone required items.
        let out = s.press("Advance to", None);
        assert!(out.contains("Cannot advance yet"), "{kind}:\n{out}");
        assert!(
            out.contains("check failing: API answers — HTTP 503"),
            "{kind}:\n{out}"
        );
        assert!(
            out.contains("check failing: Search answers — no answer within 500ms"),
            "{kind}:\n{out}"
        );

        // The API recovers; checking again marks it done.
        status.store(200, Ordering::SeqCst);
        let out = s.press("Check again", None);
        assert!(out.contains("Checking again"), "{kind}:\n{out}");
        assert!(
            out.contains("✅ API answers — automated check"),
            "{kind}:\n{out}"
        );
        // Search still times out: someone answers for it by hand.
        let out = s.press("Done: Search answers", None);
        assert!(out.contains("✅ Search answers — Alice"), "{kind}:\n{out}");
        let out = s.press("Advance to", None);
        assert!(!out.contains("Cannot advance"), "{kind}:\n{out}");
        s.quit();

        let store = Store::connect(&db.url).await.unwrap();
        let run = crate::helpers::shell_run(&store, 1).await;
        assert_eq!(run.phase, "ship", "{kind}");
        let by = |item: &str| match run.item_state("verify", item) {
            ItemState::Done { by, .. } => by.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(by("health"), AUTOMATED_CHECK, "{kind}");
        assert_eq!(by("api"), AUTOMATED_CHECK, "{kind}");
        assert_eq!(by("search"), "alice", "{kind}");
        let search = run.check("verify", "search").unwrap();
        assert!(!search.passed, "{kind}");
        assert!(run.check("verify", "api").unwrap().passed, "{kind}");
        let audit = store.audit_for_run(run.id).await.unwrap();
        let count = |action: &str| audit.iter().filter(|a| a.action == action).count();
        assert_eq!(
            count("check.passed"),
            3,
            "{kind}: health, then health and api"
        );
        assert_eq!(
            count("check.failed"),
            3,
            "{kind}: api and search, then search"
        );
        assert_eq!(count("check.requested"), 1, "{kind}");
        store.close().await;
    }
}
