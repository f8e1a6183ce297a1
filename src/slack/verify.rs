//! Slack request signing: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}`
//! keyed with the signing secret, compared in constant time, and refused when
//! the timestamp is more than five minutes from now.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, either way.
pub const WINDOW_SECS: i64 = 5 * 60;

/// Why a request was refused. Logged, never shown in detail to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSignature {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp")]
    Missing,
    #[error("the timestamp is not a number")]
    BadTimestamp,
    #[error("the timestamp is more than five minutes from now")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Check a request's signature at `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), BadSignature> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(BadSignature::Missing);
    };
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| BadSignature::BadTimestamp)?;
    if (now - ts).abs() > WINDOW_SECS {
        return Err(BadSignature::Stale);
    }
    let given = signature
        .strip_prefix("v0=")
        .and_then(crate::hex::decode)
        .ok_or(BadSignature::Mismatch)?;
    let mac = mac(secret, timestamp, body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| BadSignature::Mismatch)
}

/// The `X-Slack-Signature` value for a body, as Slack computes it.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("v0={}", crate::hex::encode(&digest))
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's published worked example (docs: verifying requests from Slack).
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const NOW: i64 = 1531420618 + 10;

    #[test]
    fn slacks_worked_example_verifies() {
        assert_eq!(sign(SECRET, TS, BODY.as_bytes()), SIG);
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), BODY.as_bytes(), NOW),
            Ok(())
        );
    }

    #[test]
    fn anything_off_is_refused() {
        let body = BODY.as_bytes();
        assert_eq!(
            verify(b"wrong secret", Some(TS), Some(SIG), body, NOW),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), b"token=changed", NOW),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            verify(SECRET, None, Some(SIG), body, NOW),
            Err(BadSignature::Missing)
        );
        assert_eq!(
            verify(SECRET, Some(TS), None, body, NOW),
            Err(BadSignature::Missing)
        );
        assert_eq!(
            verify(SECRET, Some("soon"), Some(SIG), body, NOW),
            Err(BadSignature::BadTimestamp)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), body, NOW + WINDOW_SECS),
            Err(BadSignature::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), body, NOW - 2 * WINDOW_SECS),
            Err(BadSignature::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some("v1=abcd"), body, NOW),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some("v0=zz"), body, NOW),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(&SIG[..SIG.len() - 2]), body, NOW),
            Err(BadSignature::Mismatch)
        );
    }
}
