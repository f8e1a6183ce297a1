//! What pipelines do through the HTTP API, as the engine sees it: an
//! integration of the bot file starts a run (exactly as `/deploy start`
//! would, under the integration's name) or reports on an item. The web side
//! checks the token and the body; this side checks what the integration
//! may act on, lets the domain decide, and commits.
//!
//! A call made with an `Idempotency-Key` changes state once: the key goes
//! into `processed_requests` with the change, and the answer the web side
//! builds from the new state is kept in the same transaction
//! (`api_answers`), so a repeat gets that answer and changes nothing.

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::runs::Acted;
use super::{Actor, Engine};
use crate::config::Integration;
use crate::domain::{Action, ItemReport, PersonId, Platform, Refusal, ReportStatus, Run, RunId};
use crate::store::ApiAnswer;

/// An `Idempotency-Key` as the engine keeps it: scoped to its integration,
/// with the fingerprint of the request it was first used for.
#[derive(Clone, Debug)]
pub struct Keyed {
    request_key: String,
    fingerprint: String,
}

impl Keyed {
    /// `key` sent by `integration` with a request of `method` on `path`
    /// carrying `body`.
    pub fn new(integration: &str, key: &str, method: &str, path: &str, body: &[u8]) -> Keyed {
        let mut digest = Sha256::new();
        for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
            digest.update(part);
        }
        // The caller's id is length-prefixed, so no caller's key can be
        // another caller's (`hook:deploy` + `k` against `hook` + `deploy:k`).
        Keyed {
            request_key: format!("api:{}:{integration}:{key}", integration.len()),
            fingerprint: crate::hex::encode(&digest.finalize()),
        }
    }
}

/// Builds the answer to a successful call from the run as it now is: the
/// status code and JSON body.
pub type Answer<'a> = &'a (dyn Fn(&Run) -> (u16, String) + Sync);

/// How an API call ended.
#[derive(Debug)]
pub enum ApiOutcome {
    /// Done; the answer built from the new state.
    Answered(u16, String),
    /// The call was made before with this key: its first answer.
    Replayed(u16, String),
    /// The key was first used for another request.
    KeyReused,
    /// No such run (or the phase or item is not in its runbook).
    NotFound(String),
    /// The integration may not act on this service or runbook.
    Forbidden(String),
    /// The run's state does not allow it now (finished, moved on, done).
    Conflict(String),
    /// The request is well-formed but cannot be carried out as asked.
    Unprocessable(String),
}

/// What `POST /api/v1/runs` asks for.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub platform: Platform,
    pub service: String,
    pub version: String,
    pub runbook: Option<String>,
    pub env: Option<String>,
}

/// What `POST /api/v1/runs/{id}/items/{phase}/{item}` reports.
#[derive(Clone, Debug)]
pub struct ItemRequest {
    pub phase: String,
    pub item: String,
    pub status: ReportStatus,
    pub url: Option<String>,
    pub note: Option<String>,
}

impl Engine {
    /// Start a run for `who`, as `/deploy start` does for a person.
    pub async fn api_start(
        &self,
        who: &Integration,
        req: StartRequest,
        keyed: Option<&Keyed>,
        answer: Answer<'_>,
    ) -> Result<ApiOutcome> {
        if let Some(replay) = self.replay(keyed).await? {
            return Ok(replay);
        }
        let config = self.config();
        let runbook_id = req
            .runbook
            .unwrap_or_else(|| config.default_runbook.clone());
        let Some(runbook) = config.runbooks.get(&runbook_id) else {
            let known: Vec<&str> = config.runbooks.keys().map(String::as_str).collect();
            return Ok(ApiOutcome::Unprocessable(format!(
                "there is no runbook `{runbook_id}`; runbooks: {}",
                known.join(", ")
            )));
        };
        if !who.may_act_on(&req.service, &runbook_id) {
            return Ok(ApiOutcome::Forbidden(format!(
                "integration `{}` may not start {} with runbook {runbook_id}",
                who.id, req.service
            )));
        }
        let Some(channels) = config.channels_for(req.platform) else {
            return Ok(ApiOutcome::Unprocessable(format!(
                "no channels are set up for {} in the bot file ([channels.{}])",
                req.platform,
                req.platform.as_str()
            )));
        };
        let actor = api_actor(who, req.platform);
        let now = self.clock.now();
        let env = req.env.unwrap_or_else(|| config.default_env.clone());
        let mut tx = self.store.begin().await?;
        if let Some(k) = keyed {
            if !tx.first_time(&k.request_key, now).await? {
                drop(tx);
                return self.replay_after_race(keyed).await;
            }
        }
        let run = Run::start(
            runbook,
            req.platform,
            &channels.deployments,
            &req.service,
            &req.version,
            &env,
            &PersonId::new(who.name.as_str()),
            now,
        );
        let run = self.open_run(&mut tx, &actor, run, runbook, now).await?;
        answered(tx, keyed, answer(&run), now).await
    }

    /// Record `who`'s report on an item of run `id`.
    pub async fn api_report(
        &self,
        who: &Integration,
        id: RunId,
        req: ItemRequest,
        keyed: Option<&Keyed>,
        answer: Answer<'_>,
    ) -> Result<ApiOutcome> {
        if let Some(replay) = self.replay(keyed).await? {
            return Ok(replay);
        }
        let Some(found) = self.store.run(id).await? else {
            return Ok(ApiOutcome::NotFound(format!("there is no run {id}")));
        };
        if !who.may_act_on(&found.service, &found.runbook) {
            return Ok(ApiOutcome::Forbidden(format!(
                "integration `{}` may not act on {} runs with runbook {}",
                who.id, found.service, found.runbook
            )));
        }
        let now = self.clock.now();
        let action = Action::Report {
            phase: req.phase,
            item: req.item,
            report: ItemReport {
                status: req.status,
                by: who.name.clone(),
                url: req.url,
                note: req.note,
                at: now,
            },
        };
        let actor = api_actor(who, found.platform);
        let who_id = PersonId::new(who.name.as_str());
        let key = keyed.map(|k| k.request_key.as_str());
        let mut tx = self.store.begin().await?;
        let run = match self
            .act_in(&mut tx, &actor, &who_id, id, action, key, false)
            .await?
        {
            Acted::Missing => return Ok(ApiOutcome::NotFound(format!("there is no run {id}"))),
            Acted::Misplaced(_) => unreachable!("only a click's place is checked"),
            Acted::Refused(refusal) => return Ok(refused(refusal)),
            Acted::Repeat => {
                drop(tx);
                return self.replay_after_race(keyed).await;
            }
            // Done reported again: nothing changes, the answer is the same.
            Acted::Unchanged(run) => {
                let (status, body) = answer(&run);
                return Ok(ApiOutcome::Answered(status, body));
            }
            Acted::Changed { run, .. } => run,
        };
        answered(tx, keyed, answer(&run), now).await
    }

    /// The kept answer for a key, when the call was made before.
    async fn replay(&self, keyed: Option<&Keyed>) -> Result<Option<ApiOutcome>> {
        let Some(k) = keyed else {
            return Ok(None);
        };
        Ok(self
            .store
            .api_answer(&k.request_key)
            .await?
            .map(|kept| k.replay(kept)))
    }

    /// Another call with the same key committed while this one ran: its
    /// answer, now that it is kept.
    async fn replay_after_race(&self, keyed: Option<&Keyed>) -> Result<ApiOutcome> {
        match self.replay(keyed).await? {
            Some(outcome) => Ok(outcome),
            // The key was recorded by a change that kept no answer: a call
            // answered before answers were kept, or a refusal. Say so.
            None => Ok(ApiOutcome::Conflict(
                "a request with this Idempotency-Key was already handled".into(),
            )),
        }
    }
}

impl Keyed {
    fn answer(&self, status: u16, body: &str) -> ApiAnswer {
        ApiAnswer {
            fingerprint: self.fingerprint.clone(),
            status,
            body: body.to_string(),
        }
    }

    fn replay(&self, kept: ApiAnswer) -> ApiOutcome {
        if kept.fingerprint == self.fingerprint {
            ApiOutcome::Replayed(kept.status, kept.body)
        } else {
            ApiOutcome::KeyReused
        }
    }
}

/// Keep the answer for its key (if any) with the change, and commit.
async fn answered(
    mut tx: crate::store::Tx,
    keyed: Option<&Keyed>,
    (status, body): (u16, String),
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ApiOutcome> {
    if let Some(k) = keyed {
        tx.record_api_answer(&k.request_key, &k.answer(status, &body), now)
            .await?;
    }
    tx.commit().await?;
    Ok(ApiOutcome::Answered(status, body))
}

/// The integration as the audit log sees it: its key, on the run's platform,
/// from the API.
fn api_actor(who: &Integration, platform: Platform) -> Actor {
    Actor {
        platform,
        user: who.id.clone(),
        channel: "api".into(),
    }
}

fn refused(refusal: Refusal) -> ApiOutcome {
    let text = refusal.to_string();
    if refusal.is_unknown() {
        ApiOutcome::NotFound(text)
    } else if refusal.is_conflict() {
        ApiOutcome::Conflict(text)
    } else {
        ApiOutcome::Unprocessable(text)
    }
}
