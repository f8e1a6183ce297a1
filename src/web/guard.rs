//! What every platform endpoint does with a request before it trusts it:
//! reads the body up to a bound (413 past it, naming the bound), and counts
//! each refused request (bad or missing signature, stale timestamp) in
//! `/metrics` while logging refusals at most once every ten seconds per
//! platform, with how many were left unlogged since. A burst of forged
//! requests costs a counter, not a log line each.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::Platform;
use crate::metrics::METRICS;

/// The shortest time between two refusal log lines of one platform.
const LOG_EVERY_SECS: i64 = 10;

/// The most of an over-long body read and thrown away so the client gets
/// its 413 (closing a connection with unread data resets it, and the
/// answer can be lost with it), and how long that may take.
const DRAIN_MAX: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The body, read to at most `max` bytes: 413 when it is longer (by its
/// `Content-Length` or as it streams), 400 when it cannot be read.
pub async fn body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, Response> {
    let too_large = |close: bool| {
        let message = format!("the request body is larger than {max} bytes\n");
        if close {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONNECTION, "close")],
                message,
            )
                .into_response()
        } else {
            (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max as u64) {
        // Read what was announced, if it is not absurd, so the answer
        // arrives; otherwise answer at once and close.
        let drained = n <= DRAIN_MAX as u64
            && tokio::time::timeout(DRAIN_TIME, discard(body))
                .await
                .is_ok_and(|read| read.is_some_and(|r| r == n));
        return Err(too_large(!drained));
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        // axum says "length limit exceeded" when the stream passes `max`;
        // the rest is unread, so the connection closes after the answer.
        if format!("{e:#}").contains("length limit") {
            too_large(true)
        } else {
            (
                StatusCode::BAD_REQUEST,
                "the request body could not be read\n",
            )
                .into_response()
        }
    })
}

/// Read a body to its end, keeping nothing; how many bytes it held (`None`
/// if it broke off or passed [`DRAIN_MAX`]).
async fn discard(body: Body) -> Option<u64> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        read += chunk.ok()?.len() as u64;
        if read > DRAIN_MAX as u64 {
            return None;
        }
    }
    Some(read)
}

/// When each platform's refusals were last logged (Unix seconds), and how
/// many came since without a line of their own.
struct Throttle {
    last: [AtomicI64; 3],
    unlogged: [AtomicU64; 3],
}

static THROTTLE: Throttle = Throttle {
    last: [const { AtomicI64::new(i64::MIN) }; 3],
    unlogged: [const { AtomicU64::new(0) }; 3],
};

fn slot(platform: Platform) -> usize {
    match platform {
        Platform::Slack => 0,
        Platform::Discord => 1,
        Platform::Shell => 2,
    }
}

/// Count a refused request and log it, unless one was logged in the last
/// ten seconds.
pub fn refused(platform: Platform, reason: &str) {
    METRICS.refused.add(platform, 1);
    let i = slot(platform);
    let now = chrono::Utc::now().timestamp();
    let last = THROTTLE.last[i].load(Ordering::Relaxed);
    let due = last == i64::MIN || now - last >= LOG_EVERY_SECS;
    if due
        && THROTTLE.last[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let unlogged = THROTTLE.unlogged[i].swap(0, Ordering::Relaxed);
        tracing::warn!(
            %platform,
            reason,
            unlogged_since_last = unlogged,
            "refused a request (bad or missing signature); at most one such line every {LOG_EVERY_SECS} s, all counted in tminus_requests_refused_total"
        );
    } else {
        THROTTLE.unlogged[i].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_burst_of_refusals_is_counted_whole_and_logged_once() {
        // The shell's slot: no endpoint refuses shell requests, so no
        // other test moves it.
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let before = METRICS.refused.get(Platform::Shell);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..1000 {
                refused(Platform::Shell, "signature does not match");
            }
        });
        assert_eq!(METRICS.refused.get(Platform::Shell) - before, 1000);
        let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.lines().count(), 1, "{logged}");
        assert!(logged.contains("signature does not match"), "{logged}");
    }
}
