//! Incidents and on-call: opening an incident, climbing its escalation
//! ladder, acknowledging and resolving it, `/oncall` and overrides.
//!
//! Every page happens inside a transaction that also records it (one row
//! per incident, climb, page number and person) and queues its messages —
//! a mention in the incidents channel and a direct message with an
//! Acknowledge button — so a page is sent once however often a timer is
//! retried, a process restarts or two processes race. The next page is a
//! timer in the database, due the step's wait after the page before it;
//! after downtime an overdue page fires at once and the ladder goes on from
//! there. Acknowledging or resolving moves the incident to a new climb
//! (`generation`), which turns every timer of the old one into a no-op.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tracing::info;

use super::effects::{audit_entry, To};
use super::escalation::later;
use super::{cards, incident_cards, Actor, Engine, Reply, BOT};
use crate::chat::keys;
use crate::domain::oncall::responders;
use crate::domain::runbook::Severity;
use crate::domain::{
    Incident, IncidentAction, IncidentEvent, IncidentStatus, Person, PersonId, Policy, Run,
};
use crate::store::{TimerKind, Tx};

impl Engine {
    /// `/deploy incident <summary>`: open an incident on run `number` of
    /// the channel, or its latest open run (else its latest run).
    pub(super) async fn incident_command(
        &self,
        actor: &Actor,
        person: &Person,
        summary: String,
        severity: Severity,
        number: Option<i64>,
        key: Option<&str>,
    ) -> Result<Reply> {
        let channel = self.deploy_channel(actor);
        let mut found = self
            .find_run(actor.platform, &channel, number, number.is_none())
            .await?;
        if found.is_none() && number.is_none() {
            found = self.find_run(actor.platform, &channel, None, false).await?;
        }
        let Some(run) = found else {
            return Ok(Reply::refuse(match number {
                Some(n) => format!("There is no deployment #{n} in this channel to open an incident on."),
                None => "There is no deployment in this channel to open an incident on; start one with /deploy start.".to_string(),
            }));
        };
        self.open_incident_on(actor, person, run, severity, summary, key)
            .await
    }

    /// Open an incident on a run for a person (the command or the button).
    pub(super) async fn open_incident_on(
        &self,
        actor: &Actor,
        person: &Person,
        run: Run,
        severity: Severity,
        summary: String,
        key: Option<&str>,
    ) -> Result<Reply> {
        let summary = summary.trim().to_string();
        if summary.is_empty() {
            return Ok(Reply::refuse("An incident needs a summary: what is wrong?"));
        }
        if run.platform != actor.platform {
            return Ok(Reply::refuse(format!(
                "Deployment #{} lives on {}; open its incidents there.",
                run.number, run.platform
            )));
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if let Some(open) = tx.open_incident(run.id).await? {
            return Ok(Reply::refuse(format!(
                "Incident #{open} is already open for deployment #{}: acknowledge or resolve it from its card in the incidents channel.",
                run.number
            )));
        }
        if let Some(key) = key {
            if !tx.first_time(key, now).await? {
                return Ok(Reply::private("Already handled."));
            }
        }
        let incident = self
            .open_incident(
                &mut tx,
                &run,
                severity,
                &summary,
                person.id.as_str(),
                actor,
                now,
            )
            .await?;
        tx.commit().await?;
        let paging = match incident.policy.as_deref() {
            Some(p) => format!(
                "paging {}",
                self.config().policies.get(p).map_or(p, |p| p.name.as_str())
            ),
            None => "its runbook names no escalation policy, so nobody is paged".to_string(),
        };
        Ok(Reply::changed(format!(
            "Opened incident #{} ({}) on deployment #{}; {paging}.",
            incident.id,
            severity.as_str(),
            run.number
        )))
    }

    /// Open an incident inside `tx`: record it, post its card in the
    /// incidents channel, say so in the run's thread, and start the climb.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open_incident(
        &self,
        tx: &mut Tx,
        run: &Run,
        severity: Severity,
        summary: &str,
        opened_by: &str,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Incident> {
        let policy = self
            .runbook(run)
            .await?
            .escalation
            .clone()
            .filter(|p| self.config().policies.contains_key(p));
        let mut incident = Incident::open(run, severity, summary, policy, opened_by, now);
        incident.id = tx.insert_incident(&incident).await?;
        info!(incident = incident.id, run_id = %run.id, severity = severity.as_str(), "incident opened");
        let who = self.actor_name(opened_by);
        tx.audit(&audit_entry(
            incident.run,
            opened_by,
            actor,
            "incident.opened",
            format!(
                "{who} opened incident #{} ({}): {summary}",
                incident.id,
                severity.as_str()
            ),
            now,
        ))
        .await?;
        let data = Self::incident_data(&incident, &who);
        self.emit(tx, "incident.opened", Some(run), data, now)
            .await?;
        self.send(
            tx,
            To::Thread(run),
            None,
            cards::notice(format!(
                "🚨 Incident #{} ({}) opened by {who}: {summary}",
                incident.id,
                severity.as_str()
            )),
            now,
        )
        .await?;
        // The card first, so the incidents channel reads in order; it is
        // edited again once the first page is out.
        self.refresh_incident_card(tx, &incident, Some(run), now)
            .await?;
        if let Some(policy) = self.policy_of(&incident) {
            let first = policy
                .position(0)
                .context("a policy has at least one step")?;
            self.continue_climb(tx, &mut incident, Some(run), first, now)
                .await?;
            tx.save_incident(&incident).await?;
            self.refresh_incident_card(tx, &incident, Some(run), now)
                .await?;
        }
        Ok(incident)
    }

    pub(super) fn policy_of(&self, incident: &Incident) -> Option<Policy> {
        incident
            .policy
            .as_ref()
            .and_then(|p| self.config().policies.get(p).cloned())
    }

    pub(super) fn actor_name(&self, key: &str) -> String {
        if key == BOT {
            "tminus".to_string()
        } else {
            self.config()
                .directory
                .name(&PersonId::new(key))
                .to_string()
        }
    }

    /// A line in the incidents channel and the run's thread.
    pub(super) async fn incident_notice(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        text: String,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let card = cards::notice(text.clone());
        self.send(tx, To::Incidents(incident.platform, run), None, card, now)
            .await?;
        if let Some(run) = run {
            self.send(tx, To::Thread(run), None, cards::notice(text), now)
                .await?;
        }
        Ok(())
    }

    /// Edit the incident's card in the incidents channel.
    pub(super) async fn refresh_incident_card(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let pages = tx.pages_for(incident.id).await?;
        let policy = self.policy_of(incident).map(|p| p.name);
        let card = incident_cards::incident_card(
            incident,
            run,
            policy.as_deref(),
            &pages,
            &self.config().directory,
        );
        let key = Some(keys::incident(incident.id));
        self.send(tx, To::Incidents(incident.platform, run), key, card, now)
            .await
    }

    pub(super) async fn incident_run(
        &self,
        tx: &mut Tx,
        incident: &Incident,
    ) -> Result<Option<Run>> {
        match incident.run {
            // Read, not locked: the incident's lock is what serialises paging.
            Some(id) => tx.read_run(id).await,
            None => Ok(None),
        }
    }

    /// Acknowledge or resolve an incident (its buttons).
    pub(super) async fn incident_action(
        &self,
        actor: &Actor,
        person: &Person,
        id: i64,
        action: IncidentAction,
        key: Option<&str>,
    ) -> Result<Reply> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let Some(mut incident) = tx.lock_incident(id).await? else {
            return Ok(Reply::refuse("That incident does not exist."));
        };
        if incident.platform != actor.platform {
            return Ok(Reply::refuse(format!(
                "Incident #{id} lives on {}; act on it there.",
                incident.platform
            )));
        }
        let run = self.incident_run(&mut tx, &incident).await?;
        let allowed = self
            .incident_responders(&mut tx, &incident, run.as_ref(), now)
            .await?;
        let dir = &self.config().directory;
        let events = match incident.decide(action, &person.id, &allowed, dir, now) {
            Ok(events) => events,
            Err(refusal) => return Ok(Reply::refuse(super::capitalise(&refusal.to_string()))),
        };
        if events.is_empty() {
            return Ok(Reply::private(format!(
                "Incident #{id} is already acknowledged."
            )));
        }
        if let Some(key) = key {
            if !tx.first_time(key, now).await? {
                return Ok(Reply::private("Already handled."));
            }
        }
        let name = dir.name(&person.id).to_string();
        let mut summary = Vec::new();
        for event in &events {
            let (action, text) = match event {
                IncidentEvent::Acknowledged { .. } => (
                    "incident.acknowledged",
                    format!("✅ {name} acknowledged incident #{id}; escalation stopped."),
                ),
                IncidentEvent::Reacknowledged { .. } => (
                    "incident.acknowledged",
                    format!("✅ {name} is still on incident #{id}."),
                ),
                IncidentEvent::Resolved { note, .. } => (
                    "incident.resolved",
                    format!("🟢 {name} resolved incident #{id}: {note}"),
                ),
                IncidentEvent::Reopened => continue,
            };
            tx.audit(&audit_entry(
                incident.run,
                person.id.as_str(),
                actor,
                action,
                text.clone(),
                now,
            ))
            .await?;
            self.incident_notice(&mut tx, &incident, run.as_ref(), text.clone(), now)
                .await?;
            if !matches!(event, IncidentEvent::Reacknowledged { .. }) {
                let data = Self::incident_data(&incident, &name);
                self.emit(&mut tx, action, run.as_ref(), data, now).await?;
            }
            summary.push(text);
        }
        if events
            .iter()
            .any(|e| matches!(e, IncidentEvent::Acknowledged { .. }))
        {
            crate::metrics::METRICS
                .acknowledgements
                .add(incident.platform, 1);
        }
        if incident.status == IncidentStatus::Acknowledged {
            if let Some(timeout) = self.policy_of(&incident).and_then(|p| p.ack_timeout) {
                let kind = TimerKind::AckTimeout {
                    incident: id,
                    generation: incident.generation,
                };
                tx.schedule(&kind, later(now, timeout)).await?;
            }
        }
        tx.save_incident(&incident).await?;
        self.refresh_pages(&mut tx, &incident, run.as_ref(), now)
            .await?;
        self.refresh_incident_card(&mut tx, &incident, run.as_ref(), now)
            .await?;
        tx.commit().await?;
        Ok(Reply::changed(summary.join("\n")))
    }

    /// Who may acknowledge and resolve: everyone the policy could page and
    /// everyone paged, whoever opened it, the run's starter and the people
    /// who may roll the run back or abort it — so an incident without a
    /// policy can still be closed.
    pub(super) async fn incident_responders(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        now: DateTime<Utc>,
    ) -> Result<Vec<PersonId>> {
        let overrides = tx.overrides(now).await?;
        let pages = tx.pages_for(incident.id).await?;
        let dir = &self.config().directory;
        let mut allowed: Vec<PersonId> = self
            .policy_of(incident)
            .map(|p| responders(&p, dir, &self.config().rotations, &overrides))
            .unwrap_or_default();
        let mut add = |p: &PersonId| {
            if dir.person(p).is_some() && !allowed.contains(p) {
                allowed.push(p.clone());
            }
        };
        pages.iter().for_each(|p| add(&p.person));
        add(&PersonId::new(incident.opened_by.as_str()));
        if let Some(run) = run {
            add(&run.started_by);
            if let Ok(runbook) = self.runbook(run).await {
                let roles = runbook
                    .rollback
                    .iter()
                    .flat_map(|r| r.roles.iter())
                    .chain(runbook.abort_roles.iter());
                for role in roles {
                    dir.role(role)
                        .into_iter()
                        .flat_map(|r| r.members.iter())
                        .for_each(&mut add);
                }
            }
        }
        Ok(allowed)
    }
}
