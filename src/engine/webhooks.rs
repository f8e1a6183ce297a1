//! Events for other systems: what happened to runs and incidents, queued in
//! the outbox in the transaction of the change, one row per subscribed
//! endpoint (its lane, so each endpoint gets its events in order). The
//! body names the event with an id that stays the same on every retry,
//! so a receiver that keeps the ids it has seen takes each event once;
//! `crate::webhooks` signs and sends them.

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::Engine;
use crate::domain::{Event, Incident, Run};
use crate::store::Tx;

impl Engine {
    /// Queue `event` with `data` for every endpoint subscribed to it.
    pub(super) async fn emit(
        &self,
        tx: &mut Tx,
        event: &str,
        run: Option<&Run>,
        data: Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let config = self.config();
        let mut endpoints = config.subscribers(event).peekable();
        if endpoints.peek().is_none() {
            return Ok(());
        }
        let body = json!({
            "id": event_id()?,
            "type": event,
            "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": data,
        })
        .to_string();
        for endpoint in endpoints {
            tx.enqueue_webhook(run.map(|r| r.id), &endpoint.id, &body, now)
                .await?;
        }
        Ok(())
    }

    /// The webhook event a run's domain event means, if any.
    pub(super) async fn emit_run_event(
        &self,
        tx: &mut Tx,
        run: &Run,
        event: &Event,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (name, extra) = match event {
            Event::PhaseEntered { from, to } => ("phase.advanced", json!({"from": from, "to": to})),
            Event::ItemDone { phase, item } => ("item.done", json!({"phase": phase, "item": item})),
            Event::Completed => ("run.completed", json!({})),
            Event::Aborted { reason } => ("run.aborted", json!({"reason": reason})),
            Event::RolledBack => ("run.rolled_back", json!({})),
            _ => return Ok(()),
        };
        let mut data = json!({"run": self.run_data(run), "by": by});
        if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
            data.extend(extra);
        }
        self.emit(tx, name, Some(run), data, now).await
    }

    /// A run as events describe it; no signed page link, which would open
    /// the run to whoever holds the event.
    pub(super) fn run_data(&self, run: &Run) -> Value {
        json!({
            "id": run.id.0, "number": run.number, "service": run.service, "version": run.version,
            "env": run.env, "runbook": run.runbook, "platform": run.platform.as_str(),
            "status": run.status.as_str(), "phase": run.phase, "started_by": run.started_by.as_str(),
        })
    }

    /// An incident as events describe it.
    pub(super) fn incident_data(incident: &Incident, by: &str) -> Value {
        json!({
            "incident": {
                "id": incident.id, "run": incident.run.map(|r| r.0),
                "severity": incident.severity.as_str(), "summary": incident.summary,
                "status": incident.status.as_str(),
            },
            "by": by,
        })
    }
}

/// `msg_` and 16 random bytes in hex.
fn event_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).context("no randomness for an event id")?;
    Ok(format!("msg_{}", crate::hex::encode(&bytes)))
}
