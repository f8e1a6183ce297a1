use super::*;
use std::time::Duration;

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
    let rows = store
        .rows(
            "SELECT request_key FROM processed_requests ORDER BY request_key",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.first().unwrap()).collect()
}

#[test]
fn arguments_are_bound_by_their_number_whatever_order_they_appear_in() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let rows = sql::lite_rows(
        &conn,
        "SELECT $3 AS c, $1 AS a, $3 || $2 AS cb, $4 AS n",
        &["a".into(), "b".into(), "c".into(), Arg::Int(None)],
    )
    .unwrap();
    let row = &rows[0];
    assert_eq!(row.get::<String>("c").unwrap(), "c");
    assert_eq!(row.get::<String>("a").unwrap(), "a");
    assert_eq!(row.get::<String>("cb").unwrap(), "cb");
    assert_eq!(row.get::<Option<i64>>("n").unwrap(), None);
    let err = row.get::<i64>("a").unwrap_err();
    assert_eq!(
        format!("{err}"),
        "column a: expected an integer, found text"
    );
    let err = sql::lite_rows(&conn, "SELECT $2", &["a".into()]).unwrap_err();
    assert!(format!("{err}").contains("no argument"), "{err}");
}

#[tokio::test]
async fn writes_are_seen_inside_the_transaction_and_by_others_only_after_the_commit() {
    let (_dir, store) = sqlite().await;
    let mut tx = store.begin().await.unwrap();
    let insert = "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2)";
    tx.exec(insert, &["b".into(), 1.into()]).await.unwrap();
    tx.exec(insert, &["a".into(), 2.into()]).await.unwrap();
    // Another connection sees nothing before the commit.
    assert!(keys(&store).await.is_empty());
    // The transaction sees its own writes.
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
async fn a_write_that_fails_leaves_nothing_of_its_transaction() {
    let (_dir, store) = sqlite().await;
    let mut tx = store.begin().await.unwrap();
    let insert = "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2)";
    tx.exec(insert, &["x".into(), 1.into()]).await.unwrap();
    let err = tx.exec(insert, &["x".into(), 2.into()]).await.unwrap_err();
    assert!(format!("{err:#}").contains("UNIQUE"), "{err:#}");
    drop(tx);
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
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let level: i64 = tx.scalar("PRAGMA synchronous", &[]).await.unwrap();
            drop(tx);
            (
                level,
                store
                    .scalar::<i64>("PRAGMA synchronous", &[])
                    .await
                    .unwrap(),
            )
        }
    };
    let (_dir, store) = sqlite().await;
    // SQLite's numbers: 1 is NORMAL, 2 is FULL.
    assert_eq!(synchronous(&store).await, (1, 1));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("full.db").display());
    let store = Store::connect_with(&url, Durability::PowerCut)
        .await
        .unwrap();
    assert_eq!(synchronous(&store).await, (2, 2));
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

#[tokio::test]
async fn an_in_memory_sqlite_database_is_refused_with_the_reason() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let err = Store::connect(url).await.err().expect("refused");
        assert!(
            format!("{err:#}").contains("not in memory"),
            "{url}: {err:#}"
        );
    }
}

/// Another process holding SQLite's write lock makes a writer wait for it
/// asleep, so the rest of the runtime (here one thread) goes on meanwhile,
/// and the write goes through once the lock is let go.
#[tokio::test]
async fn a_writer_waits_for_another_process_lock_without_holding_the_thread() {
    let (dir, store) = sqlite().await;
    let path = dir.path().join("t.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let other = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let mut tx = store.begin().await.unwrap();
    assert!(tx.first_time("after-the-lock", now()).await.unwrap());
    tx.commit().await.unwrap();
    ticker.abort();
    other.join().unwrap();
    assert!(
        ticks.load(std::sync::atomic::Ordering::SeqCst) >= 10,
        "the runtime's thread was held while the writer waited"
    );
    assert_eq!(keys(&store).await, ["after-the-lock"]);
}

/// A group whose members and heir were all cut off (the turn free, the
/// transaction open, SQLite's write lock held) is committed by the
/// checkpoint task, so another process can write again.
#[tokio::test]
async fn a_group_left_with_nobody_to_commit_it_is_committed_soon() {
    let (dir, store) = sqlite().await;
    let Db::Sqlite(lite) = &store.db else {
        unreachable!()
    };
    lite.turns
        .leave_orphan("INSERT INTO processed_requests (request_key, at) VALUES ('orphan', 1)")
        .await;
    assert!(keys(&store).await.is_empty(), "not committed yet");
    let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    other.busy_timeout(Duration::ZERO).unwrap();
    let mut waited = Duration::ZERO;
    while other.execute_batch("BEGIN IMMEDIATE").is_err() {
        assert!(
            waited < Duration::from_secs(3),
            "the write lock was never let go"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(keys(&store).await, ["orphan"]);
}

/// When SQLite rolls the whole transaction back on its own (here a full
/// disk), the writer's later statements and its commit fail instead of
/// running outside any transaction, and the next writer starts afresh.
#[tokio::test]
async fn a_transaction_sqlite_dropped_fails_to_its_end() {
    let (_dir, store) = sqlite().await;
    let mut tx = store.begin().await.unwrap();
    let pages: i64 = tx.scalar("PRAGMA page_count", &[]).await.unwrap();
    tx.rows(&format!("PRAGMA max_page_count = {}", pages + 2), &[])
        .await
        .unwrap();
    assert!(tx.first_time("before", now()).await.unwrap());
    let big = "x".repeat(200_000);
    let insert = "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2)";
    let err = tx.exec(insert, &[big.into(), 1.into()]).await.unwrap_err();
    assert!(format!("{err:#}").contains("full"), "{err:#}");
    let after = tx.exec(insert, &["after".into(), 2.into()]).await;
    assert!(after.is_err(), "a statement ran outside the transaction");
    let commit = tx.commit().await.unwrap_err();
    assert!(format!("{commit:#}").contains("rolled back"), "{commit:#}");
    assert!(keys(&store).await.is_empty(), "nothing of it is kept");

    let mut tx = store.begin().await.unwrap();
    tx.rows("PRAGMA max_page_count = 1073741823", &[])
        .await
        .unwrap();
    assert!(tx.first_time("next", now()).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(keys(&store).await, ["next"]);
}

/// A new PostgreSQL database with the schema, or `None` when
/// `TEST_DATABASE_URL` is not set (outside CI).
async fn postgres() -> Option<(String, Store)> {
    let Some(admin_url) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but TEST_DATABASE_URL is not: CI runs the PostgreSQL tests"
        );
        return None;
    };
    let name = format!(
        "tminus_unit_{}_{}",
        std::process::id(),
        Utc::now().timestamp_millis()
    );
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url.as_str(), String::new()), |(b, q)| {
            (b, format!("?{q}"))
        });
    let url = format!("{}/{name}{query}", &base[..base.rfind('/').unwrap()]);
    let store = Store::connect(&url).await.unwrap();
    Some((url, store))
}

/// What PostgreSQL read to run the lane's next claim with a generic plan
/// (the plan a prepared statement keeps), after the planner's statistics
/// were taken with every message still undelivered: the claim must walk
/// neither the delivered messages before the head nor the backlog behind
/// it, which the plans of the `MIN(id)` form and of an equality lookup of
/// a newer edit did (thousands of buffers here).
#[tokio::test]
async fn a_lane_claim_on_postgres_reads_neither_the_delivered_nor_the_backlog() {
    let Some((url, store)) = postgres().await else {
        return;
    };
    let insert = |from: i64, to: i64| {
        let store = store.clone();
        async move {
            store
                .write(
                    "INSERT INTO outbox (platform, channel, message_key, payload, created_at, \
                     next_attempt_at) SELECT 'slack', 'C1', 'run:' || g || ':card', 'x', 0, 0 \
                     FROM generate_series($1::BIGINT, $2::BIGINT) g",
                    &[from.into(), to.into()],
                )
                .await
                .unwrap()
        }
    };
    // Statistics from when the outbox was small, as after a quiet start.
    insert(1, 10).await;
    store.write("ANALYZE outbox", &[]).await.unwrap();
    insert(11, 4000).await;
    store
        .write("UPDATE outbox SET delivered_at = 1 WHERE id <= 2000", &[])
        .await
        .unwrap();
    store.close().await;

    let store = Store::connect(&url).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.exec("SET LOCAL plan_cache_mode = force_generic_plan", &[])
        .await
        .unwrap();
    let explain = format!(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}",
        queue::next_in_lane_sql(Dialect::Postgres)
    );
    let args: [Arg; 7] = [
        "worker".into(),
        10_000.into(),
        "slack".into(),
        1.into(),
        "C1".into(),
        1_000.into(),
        2000.into(),
    ];
    let rows = tx.rows(&explain, &args).await.unwrap();
    drop(tx);
    store.close().await;
    let plan: Vec<String> = rows.iter().map(|r| r.first().unwrap()).collect();
    let plan = plan.join("\n");
    // The top node: the update, what it claimed and, on its first
    // `Buffers` line, everything the statement read.
    assert!(
        plan.lines().next().unwrap().contains("rows=1 loops=1"),
        "the head is claimed:\n{plan}"
    );
    let read: i64 = plan
        .lines()
        .find_map(|l| l.trim().strip_prefix("Buffers: shared hit="))
        .and_then(|n| n.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no buffer counts:\n{plan}"));
    assert!(read < 200, "the claim read {read} buffers:\n{plan}");
}

/// On PostgreSQL a transaction's writes wait and go with its next
/// statement: it sees them, and one that fails fails the statement it went
/// with and leaves nothing of the transaction.
#[tokio::test]
async fn postgres_writes_go_with_the_next_statement_and_fail_the_transaction_whole() {
    let Some((_url, store)) = postgres().await else {
        return;
    };
    let insert = "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2)";
    let mut tx = store.begin().await.unwrap();
    tx.write(insert, &["a".into(), 1.into()]).await.unwrap();
    assert!(
        !tx.first_time("a", now()).await.unwrap(),
        "the waiting write is seen"
    );
    tx.write(insert, &["b".into(), 1.into()]).await.unwrap();
    tx.write(insert, &["b".into(), 2.into()]).await.unwrap();
    let err = tx.commit().await.unwrap_err();
    assert!(format!("{err:#}").contains("duplicate key"), "{err:#}");
    assert!(keys(&store).await.is_empty(), "nothing was committed");
    // The connection serves the next transaction.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.first_time("a", now()).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(keys(&store).await, ["a"]);
}

/// A PostgreSQL transaction dropped before its commit, or cut off in the
/// middle of a statement, is rolled back at once: the row it wrote no
/// longer holds anyone up, and its connection goes back to the pool.
#[tokio::test]
async fn a_dropped_or_cancelled_postgres_transaction_frees_its_rows_and_connection() {
    let Some((_url, store)) = postgres().await else {
        return;
    };
    for _ in 0..3 * pg::POOL_SIZE {
        let mut tx = store.begin().await.unwrap();
        assert!(tx.first_time("k", now()).await.unwrap());
        drop(tx);
    }
    let mut tx = store.begin().await.unwrap();
    tx.write(
        "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2)",
        &["k".into(), 1.into()],
    )
    .await
    .unwrap();
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        tx.rows("SELECT pg_sleep(2) AS slept", &[]),
    )
    .await;
    assert!(cut.is_err(), "the statement was cut off");
    drop(tx);
    // Another transaction's insert of the same key would wait for the
    // dropped one's row until its rollback.
    let fresh = tokio::time::timeout(Duration::from_secs(10), async {
        let mut tx = store.begin().await.unwrap();
        let new = tx.first_time("k", now()).await.unwrap();
        tx.commit().await.unwrap();
        new
    })
    .await
    .expect("the dropped transactions' rows are free");
    assert!(fresh, "the dropped transactions wrote nothing");
    assert_eq!(keys(&store).await, ["k"]);
}

/// `sslmode` as libpq reads it: the local server offers TLS with a
/// certificate of its own, so `require` encrypts without checking it,
/// `disable` does not encrypt, and `verify-full` refuses the certificate.
#[tokio::test]
async fn postgres_connects_with_tls_as_sslmode_says() {
    let Some((url, store)) = postgres().await else {
        return;
    };
    let offered: String = store.scalar("SHOW ssl", &[]).await.unwrap();
    store.close().await;
    let base = url.split_once('?').map_or(url.as_str(), |(b, _)| b);
    let encrypted = |mode: &'static str| {
        let url = format!("{base}?sslmode={mode}&application_name=tminus-test");
        async move {
            let store = Store::connect(&url).await?;
            let ssl: i64 = store
                .scalar(
                    "SELECT CAST(ssl AS INT) FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await?;
            let name: String = store.scalar("SHOW application_name", &[]).await?;
            assert_eq!(name, "tminus-test", "other parameters are kept");
            store.close().await;
            anyhow::Ok(ssl == 1)
        }
    };
    assert!(!encrypted("disable").await.unwrap());
    if offered == "on" {
        assert!(encrypted("require").await.unwrap());
        assert!(encrypted("prefer").await.unwrap());
        let err = encrypted("verify-full").await.unwrap_err();
        assert!(
            format!("{err:#}").to_lowercase().contains("certificate"),
            "{err:#}"
        );
    } else {
        assert!(encrypted("require").await.is_err());
        assert!(!encrypted("prefer").await.unwrap());
    }
    let err = encrypted("sometimes").await.unwrap_err();
    assert!(format!("{err:#}").contains("verify-full"), "{err:#}");
}
