//! Who may read a run page. Links posted in chat carry an expiry and an
//! HMAC-SHA256 signature made with the server's secret (`TMINUS_WEB_SECRET`)
//! over what they open and until when: `?exp=UNIX&sig=HEX`. A link for one
//! run opens its page, its Markdown report and its JSON; a link for the run
//! list opens the list. API clients may instead send a static bearer token
//! (`TMINUS_WEB_TOKEN`). Anything else — no signature, a forged or altered
//! one, an expired link — gets 403. Secrets are held in [`Secret`] so they
//! never reach a log.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::domain::{Dur, RunId};

/// How long a link posted in chat stays valid unless `TMINUS_WEB_LINK_TTL` says otherwise.
pub const DEFAULT_TTL: Dur = Dur::from_const_secs(30 * 24 * 3600);

/// What a signature grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The run list.
    Runs,
    /// One run: its page, report and JSON.
    Run(RunId),
}

impl Scope {
    fn text(self) -> String {
        match self {
            Scope::Runs => "runs".to_string(),
            Scope::Run(id) => format!("run:{id}"),
        }
    }
}

/// The web settings, from the environment (read by [`crate::settings`]).
#[derive(Clone, Debug)]
pub struct WebAccess {
    /// Signs and checks links; without it no link is valid.
    pub secret: Option<Secret>,
    /// A bearer token that opens every page, for API clients.
    pub token: Option<Secret>,
    /// Where people reach `tminus serve` (`https://tminus.example.com`),
    /// for links posted in chat.
    pub public_url: Option<String>,
    pub ttl: Dur,
}

impl WebAccess {
    /// The query string (`exp=…&sig=…`) that opens `scope` until `until`.
    pub fn query(&self, scope: Scope, until: DateTime<Utc>) -> Option<String> {
        let secret = self.secret.as_ref()?;
        let exp = until.timestamp();
        Some(format!("exp={exp}&sig={}", sign(secret, scope, exp)))
    }

    /// A full link to a run's page, valid for the configured time from `now`,
    /// when both a secret and a public URL are set.
    pub fn run_link(&self, run: RunId, now: DateTime<Utc>) -> Option<String> {
        let base = self.public_url.as_ref()?;
        let query = self.query(Scope::Run(run), now + self.ttl.to_chrono())?;
        Some(format!("{base}/runs/{run}?{query}"))
    }

    /// Whether a request for `scope` may be answered: a valid, unexpired
    /// signature, or the bearer token.
    pub fn allows(
        &self,
        scope: Scope,
        exp: Option<&str>,
        sig: Option<&str>,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> bool {
        if let (Some(token), Some(given)) = (&self.token, bearer) {
            if constant_time_eq(token.expose().as_bytes(), given.as_bytes()) {
                return true;
            }
        }
        let (Some(secret), Some(exp), Some(sig)) = (&self.secret, exp, sig) else {
            return false;
        };
        let Ok(exp) = exp.parse::<i64>() else {
            return false;
        };
        if exp < now.timestamp() {
            return false;
        }
        let Some(sig) = crate::hex::decode(sig) else {
            return false;
        };
        let mut mac = mac(secret);
        mac.update(format!("{}:{exp}", scope.text()).as_bytes());
        mac.verify_slice(&sig).is_ok()
    }
}

fn mac(secret: &Secret) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length")
}

/// The signature of `scope` until `exp` (Unix seconds), as hex.
pub fn sign(secret: &Secret, scope: Scope, exp: i64) -> String {
    let mut mac = mac(secret);
    mac.update(format!("{}:{exp}", scope.text()).as_bytes());
    crate::hex::encode(&mac.finalize().into_bytes())
}

/// Equal bytes, compared in time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl crate::engine::LinkSigner for WebAccess {
    fn run_link(&self, run: RunId, now: DateTime<Utc>) -> Option<String> {
        WebAccess::run_link(self, run, now)
    }

    fn base_url(&self) -> Option<String> {
        self.public_url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> WebAccess {
        WebAccess {
            secret: Some(Secret::new("s3cret".into())),
            token: Some(Secret::new("api-token".into())),
            public_url: Some("https://tminus.example.com".into()),
            ttl: Dur::from_mins(60),
        }
    }

    fn split(query: &str) -> (String, String) {
        let mut exp = String::new();
        let mut sig = String::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = v.into(),
                Some(("sig", v)) => sig = v.into(),
                _ => {}
            }
        }
        (exp, sig)
    }

    #[test]
    fn a_signed_link_opens_its_run_until_it_expires_and_nothing_else() {
        let a = access();
        let now: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let link = a.run_link(RunId(5), now).unwrap();
        let query = link.split_once('?').unwrap().1;
        assert!(link.starts_with("https://tminus.example.com/runs/5?exp="));
        let (exp, sig) = split(query);
        let run = Scope::Run(RunId(5));
        assert!(a.allows(run, Some(&exp), Some(&sig), None, now));
        // Another run, the list, an altered expiry, a forged signature, too late.
        assert!(!a.allows(Scope::Run(RunId(6)), Some(&exp), Some(&sig), None, now));
        assert!(!a.allows(Scope::Runs, Some(&exp), Some(&sig), None, now));
        let later = (exp.parse::<i64>().unwrap() + 3600).to_string();
        assert!(!a.allows(run, Some(&later), Some(&sig), None, now));
        let forged = sign(&Secret::new("guess".into()), run, exp.parse().unwrap());
        assert!(!a.allows(run, Some(&exp), Some(&forged), None, now));
        assert!(!a.allows(run, Some(&exp), Some("zz"), None, now));
        assert!(!a.allows(run, None, None, None, now));
        let after = now + chrono::Duration::minutes(61);
        assert!(!a.allows(run, Some(&exp), Some(&sig), None, after));
        // The bearer token opens everything; a wrong one nothing.
        assert!(a.allows(Scope::Runs, None, None, Some("api-token"), now));
        assert!(!a.allows(Scope::Runs, None, None, Some("api-tokem"), now));
        // Without a secret no link is valid and none is made.
        let off = WebAccess { secret: None, ..a };
        assert!(off.run_link(RunId(5), now).is_none());
        assert!(!off.allows(run, Some(&exp), Some(&sig), None, now));
    }
}
