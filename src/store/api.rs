//! Answers to API calls made with an `Idempotency-Key`. The answer is
//! written in the transaction of the change it reports, so a repeated call
//! finds either nothing (the first never committed: do it now) or the
//! answer to give again. The change itself is guarded by the same key in
//! `processed_requests`, so two calls racing with one key change once.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::{col, ms, Store, Tx};

/// The first answer to a keyed API call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiAnswer {
    /// SHA-256 of the request (method, path, body) the key was first used for.
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
}

impl Tx {
    /// Keep the answer to the keyed call this transaction carries out.
    pub async fn record_api_answer(
        &mut self,
        key: &str,
        answer: &ApiAnswer,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.write(
            "INSERT INTO api_answers (request_key, fingerprint, status, body, at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                key.into(),
                answer.fingerprint.as_str().into(),
                i64::from(answer.status).into(),
                answer.body.as_str().into(),
                ms(now).into(),
            ],
        )
        .await
        .context("keeping an API answer")?;
        Ok(())
    }
}

impl Store {
    /// The answer kept for a keyed call, if it committed.
    pub async fn api_answer(&self, key: &str) -> Result<Option<ApiAnswer>> {
        let row = self
            .row(
                "SELECT fingerprint, status, body FROM api_answers WHERE request_key = $1",
                &[key.into()],
            )
            .await?;
        row.map(|r| {
            Ok(ApiAnswer {
                fingerprint: col(&r, "fingerprint")?,
                status: u16::try_from(col::<i64>(&r, "status")?)?,
                body: col(&r, "body")?,
            })
        })
        .transpose()
    }
}
