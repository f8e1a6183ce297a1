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
