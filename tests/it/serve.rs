//! `tminus serve` as a process: it binds the address it is given (port 0
//! here), says where it listens, answers health and readiness, and stops
//! cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::helpers::{bot_config, sqlite_db};

/// A bare HTTP/1.1 GET; returns the status code and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to tminus serve");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_answers_health_and_readiness_and_stops_on_sigterm() {
    let db = sqlite_db();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tminus"))
        .args(["serve", "--config"])
        .arg(bot_config())
        .env("DATABASE_URL", &db.url)
        .env("TMINUS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tminus serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("tminus listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(get(&addr, "/nope").0, 404);

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exited with {status} after SIGTERM");
}

/// Readiness takes a write: a PostgreSQL database that turns read-only (as
/// after a fail-over to a replica) still answers every read, and `/readyz`
/// says it is not ready instead of letting every click fail behind a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_database_takes_no_writes() {
    // PostgreSQL only; `postgres_db` says when it skips, and fails under CI.
    let Some(db) = crate::helpers::postgres_db().await else {
        return;
    };
    let serve = crate::helpers::ServeProcess::start(&db.url, &[]);
    let http = reqwest::Client::new();
    let ready = || async {
        let r = http.get(serve.url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(ready().await, (200, "ready\n".to_string()));
    db.set_read_only(true).await;
    // The pool reconnects (read-only now); reads work, the write does not.
    let mut answer = ready().await;
    for _ in 0..50 {
        if answer.0 == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        answer = ready().await;
    }
    assert_eq!(
        answer,
        (503, "the database does not take writes\n".to_string())
    );
    let health = http.get(serve.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "the process itself is alive");
    db.set_read_only(false).await;
}

/// Slow and idle connections do not starve the server: 200 clients each
/// send half a request's headers and stop (slowloris), 200 more connect and
/// send nothing; `/healthz` still answers at once on a new connection, and
/// after the header time-out the server has closed every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_health_still_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = sqlite_db();
    let serve = crate::helpers::ServeProcess::start(&db.url, &[]);
    let mut held = Vec::new();
    for i in 0..400 {
        let mut s = tokio::net::TcpStream::connect(&serve.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        held.push(s);
    }
    let started = std::time::Instant::now();
    let http = reqwest::Client::new();
    let health = http
        .get(serve.url("/healthz"))
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .expect("/healthz answers beside 400 stalled connections");
    assert_eq!(health.status().as_u16(), 200);
    // After the time-out each stalled connection is closed by the server:
    // a read sees the end (or a reset), never data that is not coming.
    let deadline = tminus::web::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(5);
    for (i, mut s) in held.into_iter().enumerate() {
        let left = deadline.saturating_sub(started.elapsed());
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("connection {i} was still open after the time-out"));
        match read {
            // A slowloris gets 408 before the close, at most.
            Ok(0) | Err(_) => {}
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(text.starts_with("HTTP/1.1 408"), "connection {i}: {text}");
            }
        }
    }
}

/// A SQLite database whose `-shm` file cannot be written (here: a
/// directory stands where it goes) stops `serve` at start with the file
/// named, instead of a SIGBUS at the first write with nothing logged.
#[test]
fn serve_names_a_sqlite_file_it_cannot_write_and_exits() {
    let db = sqlite_db();
    let path = db.url.strip_prefix("sqlite://").unwrap().to_string();
    std::fs::create_dir(format!("{path}-shm")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tminus"))
        .args(["serve", "--config"])
        .arg(bot_config())
        .env("DATABASE_URL", &db.url)
        .env("TMINUS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tminus serve");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("serve kept running on a database it cannot write");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains(&format!("cannot open {path}-shm for writing")),
        "{err}"
    );
}
