//! Items a pipeline carries out. Pressing "Run" (by someone in the item's
//! roles) marks the item running, records the call with a one-time token
//! (`hook_calls`) and queues it as a timer due at once, with another timer
//! for the item's time-out — all in the press's transaction, so the call
//! is never lost across a restart. The call goes out of any transaction,
//! to the hook's URL from the bot file only, with placeholders in its body
//! filled; the pipeline reports back through the API with the token. A
//! refused call, or no report in time, fails the item, said in the thread.
//!
//! Once, not twice: an attempt is noted before the request goes, and a
//! call the pipeline took is never made again. An attempt that began and
//! never ended (the process died in it) is made again only while the
//! pipeline has not reported, with the same `Idempotency-Key`, so a
//! pipeline that honours the key runs once.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::runs::Acted;
use super::{timer_actor, Engine};
use crate::domain::{Action, ItemReport, ItemState, PersonId, ReportStatus, Run, RunId, Runbook};
use crate::monitor::HookAnswer;
use crate::store::{HookCall, TimerKind, Tx};

/// How often a call is tried before the item fails.
const MAX_ATTEMPTS: i64 = 5;

impl Engine {
    /// "Run" was pressed: record the call, queue it and its time-out.
    pub(super) async fn queue_pipeline(
        &self,
        tx: &mut Tx,
        run: &Run,
        runbook: &Runbook,
        phase: &str,
        item: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let step = runbook
            .phase(phase)
            .and_then(|p| p.item(item))
            .and_then(|i| i.pipeline.as_ref())
            .context("a pipeline item without its pipeline")?;
        let token = one_time_token()?;
        let call = tx
            .insert_hook_call(run.id, phase, item, &step.hook, &token, now)
            .await?;
        tx.schedule(
            &TimerKind::HookCall {
                run: run.id,
                call,
                attempt: 0,
            },
            now,
        )
        .await?;
        tx.schedule(
            &TimerKind::HookTimeout { run: run.id, call },
            now + step.timeout.to_chrono(),
        )
        .await
    }

    /// Attempt `attempt` of pipeline call `call`, for its timer.
    pub(super) async fn call_pipeline(&self, timer: i64, call: i64, attempt: u32) -> Result<()> {
        let Some(call) = self.store.hook_call(call).await? else {
            return self.timer_done(timer).await;
        };
        let Some(run) = self.store.run(call.run).await? else {
            return self.timer_done(timer).await;
        };
        let config = self.config();
        // Made already, or no longer wanted (reported, moved on, finished,
        // or "Run" pressed again since).
        if call.called_at.is_some() || self.runner(&run, &call).await?.is_none() {
            return self.timer_done(timer).await;
        }
        let Some(hook) = config.hooks.get(&call.hook) else {
            let why = format!("the hook `{}` is no longer in the bot file", call.hook);
            return self.pipeline_failed(timer, &run, &call, why).await;
        };
        let body = hook.body.as_ref().map(|b| self.fill(b, &run, &call));
        self.store.hook_attempt(call.id, self.clock.now()).await?;
        let key = format!("tminus-call-{}", call.id);
        let answer = match &self.dry_hooks {
            Some(log) => {
                log.lock()
                    .expect("hook log")
                    .push(describe_call(hook, body.as_ref(), &key));
                HookAnswer::Taken(204)
            }
            None => self.prober.call_hook(hook, body.as_ref(), &key).await,
        };
        let now = self.clock.now();
        match answer {
            HookAnswer::Taken(_) => {
                let mut tx = self.store.begin().await?;
                if tx.mark_fired(timer, now).await? {
                    tx.hook_called(call.id, now).await?;
                }
                tx.commit().await
            }
            HookAnswer::Retry(why) if call.attempts + 1 < MAX_ATTEMPTS => {
                tracing::warn!(call = call.id, hook = %hook.id, reason = %why, "a pipeline call will be retried");
                let mut tx = self.store.begin().await?;
                if tx.mark_fired(timer, now).await? {
                    tx.hook_failed(call.id, &why).await?;
                    let wait = crate::delivery::backoff(i64::from(attempt) + 2);
                    let next = TimerKind::HookCall {
                        run: run.id,
                        call: call.id,
                        attempt: attempt + 1,
                    };
                    tx.schedule(&next, now + chrono::Duration::from_std(wait)?)
                        .await?;
                }
                tx.commit().await
            }
            HookAnswer::Retry(why) | HookAnswer::Refused(why) => {
                let why = format!("{} did not take the call: {why}", hook.name);
                self.pipeline_failed(timer, &run, &call, why).await
            }
        }
    }

    /// The pipeline of `call` had its time: fail the item unless it was
    /// reported on since.
    pub(super) async fn pipeline_timeout(&self, timer: i64, call: i64) -> Result<()> {
        let Some(call) = self.store.hook_call(call).await? else {
            return self.timer_done(timer).await;
        };
        let Some(run) = self.store.run(call.run).await? else {
            return self.timer_done(timer).await;
        };
        let Some(name) = self.runner(&run, &call).await? else {
            return self.timer_done(timer).await;
        };
        let waited = run
            .report(&call.phase, &call.item)
            .map(|r| self.clock.now() - r.at)
            .map_or(String::new(), |d| {
                format!(
                    " within {}",
                    crate::domain::Dur::from_millis(d.num_milliseconds())
                )
            });
        let why = format!("no report from {name}{waited}");
        self.pipeline_failed(timer, &run, &call, why).await
    }

    /// Fail the item of `call` (if it still waits on it) with `why`, by its
    /// pipeline, and mark the timer fired, in one transaction.
    async fn pipeline_failed(
        &self,
        timer: i64,
        run: &Run,
        call: &HookCall,
        why: String,
    ) -> Result<()> {
        let now = self.clock.now();
        let runner = self.runner(run, call).await?;
        let mut tx = self.store.begin().await?;
        if !tx.mark_fired(timer, now).await? {
            return Ok(());
        }
        let Some(name) = runner else {
            return tx.commit().await;
        };
        let name = name.as_str();
        tx.hook_failed(call.id, &why).await?;
        let action = Action::Report {
            phase: call.phase.clone(),
            item: call.item.clone(),
            report: ItemReport {
                status: ReportStatus::Failed,
                by: name.to_string(),
                url: None,
                note: Some(why),
                at: now,
            },
        };
        let actor = timer_actor(run.platform);
        let who = PersonId::new(name);
        match self
            .act_in(&mut tx, &actor, &who, run.id, action, None, false)
            .await?
        {
            // Marking the timer fired must stick even when nothing changed.
            Acted::Changed { .. }
            | Acted::Unchanged(_)
            | Acted::Refused(_)
            | Acted::Missing
            | Acted::Misplaced(_)
            | Acted::Repeat => tx.commit().await,
        }
    }

    async fn timer_done(&self, timer: i64) -> Result<()> {
        let mut tx = self.store.begin().await?;
        tx.mark_fired(timer, self.clock.now()).await?;
        tx.commit().await
    }

    /// The hook's body with its placeholders filled in for this call.
    fn fill(&self, body: &Value, run: &Run, call: &HookCall) -> Value {
        let callback_url = self.links.as_ref().and_then(|l| l.base_url()).map_or_else(
            || format!("/api/v1/runs/{}/items/{}/{}", run.id, call.phase, call.item),
            |base| {
                format!(
                    "{base}/api/v1/runs/{}/items/{}/{}",
                    run.id, call.phase, call.item
                )
            },
        );
        let values = [
            ("service", run.service.clone()),
            ("version", run.version.clone()),
            ("env", run.env.clone()),
            ("run_id", run.id.to_string()),
            ("run_number", run.number.to_string()),
            ("phase", call.phase.clone()),
            ("item", call.item.clone()),
            ("callback_url", callback_url),
            ("callback_token", call.token.clone()),
        ];
        crate::config::fill(body, &values)
    }

    /// The call a pipeline reports back for, by its one-time token: the
    /// latest call of that item, while the item waits on it.
    pub async fn callback(
        &self,
        run: RunId,
        phase: &str,
        item: &str,
        token: &str,
    ) -> Result<Option<crate::config::Integration>> {
        let Some(call) = self.store.latest_hook_call(run, phase, item).await? else {
            return Ok(None);
        };
        if !crate::web::access::constant_time_eq(call.token.as_bytes(), token.as_bytes()) {
            return Ok(None);
        }
        let Some(found) = self.store.run(run).await? else {
            return Ok(None);
        };
        let config = self.config();
        let Some(hook) = config.hooks.get(&call.hook) else {
            return Ok(None);
        };
        if self.runner(&found, &call).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(hook_caller(hook, &found)))
    }

    /// The name the pipeline of `call` runs under, while the run's item
    /// still waits on that call: the run open and in the item's phase, the
    /// item pending and reported running, and no later "Run" since.
    async fn runner(&self, run: &Run, call: &HookCall) -> Result<Option<String>> {
        let waiting = run.status.is_open()
            && run.phase == call.phase
            && matches!(run.item_state(&call.phase, &call.item), ItemState::Pending);
        let Some(report) = run
            .report(&call.phase, &call.item)
            .filter(|r| waiting && r.status == ReportStatus::Running)
        else {
            return Ok(None);
        };
        let latest = self
            .store
            .latest_hook_call(run.id, &call.phase, &call.item)
            .await?;
        Ok(latest
            .filter(|l| l.id == call.id)
            .map(|_| report.by.clone()))
    }
}

/// A call as it would go out, for the shell: secrets named, not shown.
fn describe_call(hook: &crate::config::Hook, body: Option<&Value>, key: &str) -> String {
    let mut out = format!("{} {}\n  Idempotency-Key: {key}\n", hook.method, hook.url);
    for (name, value) in &hook.headers {
        out.push_str(&format!("  {name}: {value}\n"));
    }
    for (name, var) in &hook.headers_env {
        out.push_str(&format!("  {name}: (from ${var})\n"));
    }
    if let Some(body) = body {
        let pretty = serde_json::to_string_pretty(body).unwrap_or_default();
        for line in pretty.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// A hook's pipeline as an API caller, on one run.
pub fn hook_caller(hook: &crate::config::Hook, run: &Run) -> crate::config::Integration {
    crate::config::Integration {
        id: format!("hook:{}", hook.id),
        name: hook.name.clone(),
        token_env: String::new(),
        services: Some(vec![run.service.clone()]),
        runbooks: Some(vec![run.runbook.clone()]),
    }
}

/// 32 random bytes as hex: a token only this call's pipeline is given.
fn one_time_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).context("no randomness for a callback token")?;
    Ok(crate::hex::encode(&bytes))
}

#[cfg(test)]
mod tests {
    use crate::config::{fill, unknown_placeholders};
    use serde_json::json;

    #[test]
    fn placeholders_are_filled_in_every_string_and_unknown_ones_named() {
        let body = json!({"ref": "main", "inputs": {"run": "{{run_id}}", "cb": "{{callback_url}}?x",
                          "list": ["{{service}}@{{version}}", 3]}});
        let filled = fill(
            &body,
            &[
                ("run_id", "7".into()),
                ("callback_url", "https://t/api".into()),
                ("service", "api".into()),
                ("version", "v1".into()),
            ],
        );
        assert_eq!(
            filled,
            json!({"ref": "main", "inputs": {"run": "7", "cb": "https://t/api?x", "list": ["api@v1", 3]}})
        );
        assert!(unknown_placeholders(&body).is_empty());
        assert_eq!(
            unknown_placeholders(&json!({"a": "{{secret}} and {{ item }}"})),
            vec!["secret"]
        );
    }
}
