use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    (dir, store)
}

async fn keys(store: &Store) -> Vec<String> {
    sqlx::query_scalar("SELECT request_key FROM processed_requests ORDER BY request_key")
        .fetch_all(&store.pool)
        .await
        .unwrap()
}

#[test]
fn a_batch_numbers_each_statements_arguments_after_the_ones_before() {
    let mut batch = Batch::default();
    batch.push("SELECT $1, $2", &[1.into(), 2.into()]);
    batch.push(
        "UPDATE t SET a = $2 WHERE b = $1 OR c = $10",
        &[3.into(), 4.into()],
    );
    batch.push("COMMIT", &[]);
    assert_eq!(
        batch.sql,
        "SELECT $1, $2;\nUPDATE t SET a = $4 WHERE b = $3 OR c = $12;\nCOMMIT"
    );
    assert_eq!(batch.args.len(), 4);
}

#[tokio::test]
async fn deferred_writes_land_with_the_commit_and_in_order() {
    let (_dir, store) = sqlite().await;
    let mut tx = store.begin().await.unwrap();
    let insert = "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2)";
    tx.defer(insert, &["b".into(), 1.into()]).await.unwrap();
    tx.defer(insert, &["a".into(), 2.into()]).await.unwrap();
    // Nothing is sent before the commit, so another connection sees nothing.
    assert!(keys(&store).await.is_empty());
    // A statement that answers sees the writes before it.
    assert!(!tx.first_time("a", now()).await.unwrap());
    assert!(tx.first_time("c", now()).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(keys(&store).await, ["a", "b", "c"]);
}

#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_and_frees_the_writer() {
    let (_dir, store) = sqlite().await;
    let mut tx = store.begin().await.unwrap();
    assert!(tx.first_time("k", now()).await.unwrap());
    drop(tx);
    // The next writer gets the connection, and the key was forgotten.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.first_time("k", now()).await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(!tx.first_time("k", now()).await.unwrap());
    drop(tx);
    assert_eq!(keys(&store).await, ["k"]);
}

#[tokio::test]
async fn a_deferred_write_that_fails_fails_the_commit_and_keeps_nothing() {
    let (_dir, store) = sqlite().await;
    let mut tx = store.begin().await.unwrap();
    let insert = "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2)";
    tx.defer(insert, &["x".into(), 1.into()]).await.unwrap();
    tx.defer(insert, &["x".into(), 2.into()]).await.unwrap();
    let err = tx.commit().await.unwrap_err();
    assert!(format!("{err:#}").contains("UNIQUE"), "{err:#}");
    assert!(keys(&store).await.is_empty());
    let mut tx = store.begin().await.unwrap();
    assert!(tx.first_time("x", now()).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(keys(&store).await, ["x"]);
}

#[tokio::test]
async fn webhook_events_are_claimed_in_order_per_endpoint() {
    let (_dir, store) = sqlite().await;
    let mut tx = store.begin().await.unwrap();
    for (endpoint, body) in [("a", "1"), ("b", "2"), ("a", "3")] {
        tx.enqueue_webhook(None, endpoint, body, now())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let lease = chrono::Duration::seconds(60);
    let first = store.claim_webhooks("w", now(), lease, 10).await.unwrap();
    let got: Vec<(&str, &str)> = first
        .iter()
        .map(|c| (c.lane.as_str(), c.message.as_str()))
        .collect();
    assert_eq!(got, [("a", "1"), ("b", "2")], "one head per endpoint");
    store.mark_delivered(first[0].id, now()).await.unwrap();
    let next = store.claim_webhooks("w", now(), lease, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].message, "3", "a's next, once its head is through");
}

#[tokio::test]
async fn sqlite_waits_for_the_disk_at_every_commit_only_when_asked() {
    let synchronous = |store: &Store| {
        let pool = store.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (_dir, store) = sqlite().await;
    // SQLite's numbers: 1 is NORMAL, 2 is FULL.
    assert_eq!(synchronous(&store).await, 1);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("full.db").display());
    let store = Store::connect_with(&url, Durability::PowerCut)
        .await
        .unwrap();
    assert_eq!(synchronous(&store).await, 2);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.first_time("durable-1", now()).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(keys(&store).await, ["durable-1"]);
}

/// Requests cancelled at any point of their transaction (a client that goes
/// away) never make another request's answer wrong or leave a group with
/// nobody to commit it: every writer not cancelled commits, every answer
/// of Ok is in the database, and the next writer gets a turn at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_writers_leave_no_wrong_answer_and_no_stuck_group() {
    let (_dir, store) = sqlite().await;
    let tasks: Vec<_> = (0..1500u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("k{i:04}");
                let work = {
                    let key = key.clone();
                    async move {
                        let mut tx = store.begin().await?;
                        tx.first_time(&key, now()).await?;
                        tx.commit().await
                    }
                };
                let outcome = if i % 3 == 0 {
                    // Cut off somewhere between taking the turn and the commit.
                    let cut = Duration::from_micros(i * 37 % 3000);
                    tokio::time::timeout(cut, work).await.ok()
                } else {
                    Some(work.await)
                };
                (
                    key,
                    i % 3 == 0,
                    outcome.map(|r| r.map_err(|e| format!("{e:#}"))),
                )
            })
        })
        .collect();
    let mut answered_ok = Vec::new();
    for task in tasks {
        let (key, cancellable, outcome) = task.await.unwrap();
        match outcome {
            Some(Ok(())) => answered_ok.push(key),
            Some(Err(e)) => panic!("{key} failed: {e}"),
            None => assert!(cancellable, "{key} was not meant to be cut off"),
        }
    }
    let stored = keys(&store).await;
    for key in &answered_ok {
        assert!(
            stored.contains(key),
            "{key} was answered Ok but is not stored"
        );
    }
    let next = tokio::time::timeout(Duration::from_secs(2), async {
        let mut tx = store.begin().await.unwrap();
        assert!(tx.first_time("after", now()).await.unwrap());
        tx.commit().await.unwrap();
    })
    .await;
    assert!(next.is_ok(), "the next writer waited for a stuck group");
}
