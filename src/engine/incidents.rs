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

use super::{cards, Actor, Engine, Reply, BOT};
use crate::chat::{Card, Destination, Outgoing};
use crate::domain::oncall::{resolve_targets, responders, Position};
use crate::domain::runbook::Severity;
use crate::domain::{
    Dur, Incident, IncidentAction, IncidentEvent, IncidentStatus, Override, Person, PersonId,
    Platform, Policy, Run,
};
use crate::store::{AuditEntry, PageRecord, TimerKind, Tx};

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
                self.config.policies.get(p).map_or(p, |p| p.name.as_str())
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
            .runbook(run)?
            .escalation
            .clone()
            .filter(|p| self.config.policies.contains_key(p));
        let mut incident = Incident {
            id: 0,
            run: Some(run.id),
            platform: run.platform,
            severity,
            summary: summary.to_string(),
            status: IncidentStatus::Triggered,
            policy,
            opened_by: opened_by.to_string(),
            opened_at: now,
            generation: 0,
            next_seq: 0,
            acked_by: None,
            acked_at: None,
            resolved_by: None,
            resolved_at: None,
            resolution: None,
        };
        incident.id = tx.insert_incident(&incident).await?;
        info!(incident = incident.id, run_id = %run.id, severity = severity.as_str(), "incident opened");
        let who = self.actor_name(opened_by);
        self.incident_audit(
            tx,
            &incident,
            opened_by,
            actor,
            "incident.opened",
            format!(
                "{who} opened incident #{} ({}): {summary}",
                incident.id,
                severity.as_str()
            ),
            now,
        )
        .await?;
        self.send_thread(
            tx,
            run,
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

    fn policy_of(&self, incident: &Incident) -> Option<&Policy> {
        incident
            .policy
            .as_ref()
            .and_then(|p| self.config.policies.get(p))
    }

    fn actor_name(&self, key: &str) -> String {
        if key == BOT {
            "tminus".to_string()
        } else {
            self.config.directory.name(&PersonId::new(key)).to_string()
        }
    }

    /// Page `next` now if its wait is over, and every page after it whose
    /// wait is zero; schedule the first one that must wait.
    async fn continue_climb(
        &self,
        tx: &mut Tx,
        incident: &mut Incident,
        run: Option<&Run>,
        mut next: Position,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(policy) = self.policy_of(incident).cloned() else {
            return Ok(());
        };
        // Only the first page can be due at once with a wait (an opened
        // incident whose first step waits); later ones are timed from now.
        if next.wait > Dur::ZERO {
            return self.schedule_page(tx, incident, next, now).await;
        }
        loop {
            self.page(tx, incident, run, &policy, next, now).await?;
            incident.next_seq = next.seq + 1;
            match policy.position(next.seq + 1) {
                Some(p) if p.wait == Dur::ZERO => next = p,
                Some(p) => return self.schedule_page(tx, incident, p, now).await,
                None => {
                    let text = format!(
                        "📟 Incident #{}: every step of {} has been paged; it stays open until someone acknowledges or resolves it.",
                        incident.id, policy.name
                    );
                    return self.incident_notice(tx, incident, run, text, now).await;
                }
            }
        }
    }

    async fn schedule_page(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        next: Position,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let kind = TimerKind::Escalate {
            incident: incident.id,
            generation: incident.generation,
            seq: next.seq,
        };
        tx.schedule(&kind, later(now, next.wait)).await
    }

    /// One page of the ladder: each person the step reaches gets a direct
    /// message, the incidents channel a mention of them all, the thread a
    /// line; advice is posted with it.
    async fn page(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        policy: &Policy,
        pos: Position,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let step = &policy.steps[pos.step];
        let overrides = tx.overrides(now).await?;
        let dir = &self.config.directory;
        let targets = resolve_targets(step, dir, &self.config.rotations, &overrides, now);
        let mut paged = Vec::new();
        for t in targets {
            let record = PageRecord {
                generation: incident.generation,
                seq: pos.seq,
                step: pos.step,
                person: t.person.clone(),
                via: t.via.clone(),
                at: now,
            };
            if tx.record_page(incident.id, &record).await? {
                paged.push(t);
            }
        }
        if paged.is_empty() && step.advice.is_none() {
            return Ok(());
        }
        crate::metrics::METRICS
            .pages
            .add(incident.platform, paged.len() as u64);
        let steps = policy.steps.len();
        let round = if pos.round > 0 {
            format!(", page {} of {}", pos.round + 1, step.repeat)
        } else {
            String::new()
        };
        let mut names = Vec::new();
        for p in &paged {
            if !reachable(dir, incident.platform, &p.person) {
                names.push(format!(
                    "{} ({}; no {} id in the bot file, so no direct message)",
                    dir.name(&p.person),
                    p.via,
                    incident.platform
                ));
                continue;
            }
            names.push(format!("{} ({})", dir.name(&p.person), p.via));
            let card = cards::page_card(
                incident,
                run,
                pos.step,
                steps,
                &p.via,
                step.advice.as_deref(),
                dir,
            );
            let key = page_key(incident.id, incident.generation, pos.seq, &p.person);
            self.send_direct(tx, incident, &p.person, key, card, now)
                .await?;
        }
        let mut lines = Vec::new();
        if !names.is_empty() {
            lines.push(format!("Paging {}", names.join(", ")));
        }
        if let Some(advice) = &step.advice {
            lines.push(format!("💡 {advice}"));
        }
        let title = format!(
            "📟 Incident #{} — escalation step {} of {steps}{round}: {}",
            incident.id,
            pos.step + 1,
            incident.summary
        );
        let mut card = Card::new(title).section(None, lines.clone());
        card.mentions = paged.iter().map(|p| p.person.clone()).collect();
        card.buttons = cards::incident_buttons(incident);
        self.send_incidents(tx, incident.platform, run, None, card, now)
            .await?;
        let detail = format!(
            "step {} of {} for incident #{}: {}",
            pos.step + 1,
            policy.name,
            incident.id,
            lines.join("; ")
        );
        let timer_actor = super::timer_actor(incident.platform);
        self.incident_audit(
            tx,
            incident,
            BOT,
            &timer_actor,
            "incident.paged",
            detail,
            now,
        )
        .await?;
        if let Some(run) = run {
            self.send_thread(
                tx,
                run,
                None,
                cards::notice(format!(
                    "📟 Incident #{}, step {}: {}",
                    incident.id,
                    pos.step + 1,
                    lines.join(" — ")
                )),
                now,
            )
            .await?;
        }
        info!(
            incident = incident.id,
            step = pos.step + 1,
            paged = paged.len(),
            "escalation step"
        );
        Ok(())
    }

    async fn send_direct(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        person: &PersonId,
        key: String,
        card: Card,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let msg = Outgoing {
            platform: incident.platform,
            to: Destination::Direct {
                person: person.clone(),
            },
            key: Some(key),
            card,
        };
        tx.enqueue(incident.run, &msg, now).await
    }

    /// Edit every page's direct message after the incident changed state,
    /// so no Acknowledge button outlives what it stands for.
    async fn refresh_pages(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(policy) = self.policy_of(incident).cloned() else {
            return Ok(());
        };
        let dir = &self.config.directory;
        for p in tx.pages_for(incident.id).await? {
            if !reachable(dir, incident.platform, &p.person) {
                continue;
            }
            let advice = policy.steps.get(p.step).and_then(|s| s.advice.as_deref());
            let card = cards::page_card(
                incident,
                run,
                p.step,
                policy.steps.len(),
                &p.via,
                advice,
                dir,
            );
            let key = page_key(incident.id, p.generation, p.seq, &p.person);
            self.send_direct(tx, incident, &p.person, key, card, now)
                .await?;
        }
        Ok(())
    }

    /// Queue a message for the platform's incidents channel (the run's
    /// channel when the bot file names none).
    async fn send_incidents(
        &self,
        tx: &mut Tx,
        platform: Platform,
        run: Option<&Run>,
        key: Option<String>,
        card: Card,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let channel = self.config.channels_for(platform).map_or_else(
            || run.map_or_else(|| "incidents".to_string(), |r| r.channel.clone()),
            |c| c.incidents.clone(),
        );
        let msg = Outgoing {
            platform,
            to: Destination::Channel { channel },
            key,
            card,
        };
        tx.enqueue(run.map(|r| r.id), &msg, now).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn incident_audit(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        actor_key: &str,
        actor: &Actor,
        action: &str,
        detail: String,
        now: DateTime<Utc>,
    ) -> Result<()> {
        tx.audit(&AuditEntry {
            run: incident.run,
            at: now,
            actor: actor_key.to_string(),
            platform: actor.platform.to_string(),
            location: actor.channel.clone(),
            action: action.to_string(),
            detail,
        })
        .await
    }

    /// A line in the incidents channel and the run's thread.
    async fn incident_notice(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        text: String,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let card = cards::notice(text.clone());
        self.send_incidents(tx, incident.platform, run, None, card, now)
            .await?;
        if let Some(run) = run {
            self.send_thread(tx, run, None, cards::notice(text), now)
                .await?;
        }
        Ok(())
    }

    /// Edit the incident's card in the incidents channel.
    async fn refresh_incident_card(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let pages = tx.pages_for(incident.id).await?;
        let policy = self.policy_of(incident).map(|p| p.name.as_str());
        let card = cards::incident_card(incident, run, policy, &pages, &self.config.directory);
        let key = Some(cards::incident_key(incident.id));
        self.send_incidents(tx, incident.platform, run, key, card, now)
            .await
    }

    /// A page timer fired: page, unless someone acted since it was set.
    pub(super) async fn fire_escalation(
        &self,
        tx: &mut Tx,
        id: i64,
        generation: u32,
        seq: u32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(mut incident) = tx.lock_incident(id).await? else {
            return Ok(());
        };
        if !incident.expects_page(generation, seq) {
            return Ok(());
        }
        let Some(pos) = self.policy_of(&incident).and_then(|p| p.position(seq)) else {
            return Ok(());
        };
        let run = self.incident_run(tx, &incident).await?;
        let due_now = Position {
            wait: Dur::ZERO,
            ..pos
        };
        self.continue_climb(tx, &mut incident, run.as_ref(), due_now, now)
            .await?;
        tx.save_incident(&incident).await?;
        self.refresh_incident_card(tx, &incident, run.as_ref(), now)
            .await
    }

    /// An acknowledgement timed out: page again from the first step,
    /// unless the incident was resolved or acknowledged again since.
    pub(super) async fn fire_ack_timeout(
        &self,
        tx: &mut Tx,
        id: i64,
        generation: u32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(mut incident) = tx.lock_incident(id).await? else {
            return Ok(());
        };
        let acked_by = incident.acked_by.clone();
        if incident.ack_timed_out(generation).is_empty() {
            return Ok(());
        }
        let run = self.incident_run(tx, &incident).await?;
        let who = acked_by.map_or_else(String::new, |p| {
            format!(" by {}", self.config.directory.name(&p))
        });
        let text = format!(
            "⏰ Incident #{} was acknowledged{who} but is still not resolved: paging again from the first step.",
            incident.id
        );
        let timer_actor = super::timer_actor(incident.platform);
        self.incident_audit(
            tx,
            &incident,
            BOT,
            &timer_actor,
            "incident.reopened",
            text.clone(),
            now,
        )
        .await?;
        self.incident_notice(tx, &incident, run.as_ref(), text, now)
            .await?;
        self.refresh_pages(tx, &incident, run.as_ref(), now).await?;
        if let Some(first) = self.policy_of(&incident).and_then(|p| p.position(0)) {
            self.continue_climb(tx, &mut incident, run.as_ref(), first, now)
                .await?;
        }
        tx.save_incident(&incident).await?;
        self.refresh_incident_card(tx, &incident, run.as_ref(), now)
            .await
    }

    async fn incident_run(&self, tx: &mut Tx, incident: &Incident) -> Result<Option<Run>> {
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
        let dir = &self.config.directory;
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
            self.incident_audit(
                &mut tx,
                &incident,
                person.id.as_str(),
                actor,
                action,
                text.clone(),
                now,
            )
            .await?;
            self.incident_notice(&mut tx, &incident, run.as_ref(), text.clone(), now)
                .await?;
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
    async fn incident_responders(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        now: DateTime<Utc>,
    ) -> Result<Vec<PersonId>> {
        let overrides = tx.overrides(now).await?;
        let pages = tx.pages_for(incident.id).await?;
        let dir = &self.config.directory;
        let mut allowed: Vec<PersonId> = self
            .policy_of(incident)
            .map(|p| responders(p, dir, &self.config.rotations, &overrides))
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
            if let Ok(runbook) = self.runbook(run) {
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

    /// `/oncall`: who holds each rotation now and until when, each
    /// policy's steps with whom they would page now, and open incidents.
    pub(super) async fn oncall(&self, platform: Platform) -> Result<Reply> {
        let now = self.clock.now();
        let overrides = self.store.overrides(now).await?;
        let dir = &self.config.directory;
        let mut card = Card::new("On call now");
        let mut lines = Vec::new();
        for r in self.config.rotations.values() {
            let h = r.holder(&overrides, now);
            let local = h.until.with_timezone(&r.timezone);
            lines.push(format!(
                "{}: {}{} until {} ({})",
                r.name,
                dir.name(&h.person),
                if h.by_override { " (override)" } else { "" },
                local.format("%a %d %b %H:%M"),
                r.timezone
            ));
        }
        if lines.is_empty() {
            lines.push("No rotations in the bot file.".into());
        }
        card = card.section(Some("Rotations"), lines);
        for p in self.config.policies.values() {
            let mut lines = Vec::new();
            for (i, step) in p.steps.iter().enumerate() {
                let when = if i == 0 && step.after == Dur::ZERO {
                    "at once".to_string()
                } else if i == 0 {
                    format!("after {}", step.after)
                } else {
                    format!("{} later", step.after)
                };
                let whom: Vec<String> =
                    resolve_targets(step, dir, &self.config.rotations, &overrides, now)
                        .iter()
                        .map(|t| format!("{} ({})", dir.name(&t.person), t.via))
                        .collect();
                let mut line = format!("{}. {when}: ", i + 1);
                if !whom.is_empty() {
                    line.push_str(&format!("page {}", whom.join(", ")));
                }
                if let Some(a) = &step.advice {
                    if !whom.is_empty() {
                        line.push_str(" — ");
                    }
                    line.push_str(&format!("advice: {a}"));
                }
                if step.repeat > 1 {
                    line.push_str(&format!(" (×{})", step.repeat));
                }
                lines.push(line);
            }
            if let Some(from) = p.repeat_from {
                lines.push(format!("then again from step {}", from + 1));
            }
            if let Some(t) = p.ack_timeout {
                lines.push(format!(
                    "an acknowledged incident pages again if not resolved within {t}"
                ));
            }
            card = card.section(Some(&format!("Escalation: {}", p.name)), lines);
        }
        let open: Vec<Incident> = self
            .store
            .unresolved_incidents()
            .await?
            .into_iter()
            .filter(|i| i.platform == platform)
            .collect();
        if !open.is_empty() {
            let lines = open
                .iter()
                .map(|i| {
                    format!(
                        "#{} {} — {} — {}",
                        i.id,
                        i.severity.as_str(),
                        i.status.as_str(),
                        i.summary
                    )
                })
                .collect();
            card = card.section(Some("Open incidents"), lines);
        }
        let mut reply = Reply::private(format!("On call at {}:", now.format("%Y-%m-%d %H:%M UTC")));
        reply.card = Some(card);
        Ok(reply)
    }

    /// `/oncall override <person> <duration> [rotation]`.
    pub(super) async fn override_rotation(
        &self,
        actor: &Actor,
        person: &Person,
        who: &str,
        duration: Dur,
        rotation: Option<String>,
        key: Option<&str>,
    ) -> Result<Reply> {
        let dir = &self.config.directory;
        let Some(target) = self.person_named(actor.platform, who) else {
            let known: Vec<&str> = dir.people.keys().map(|k| k.as_str()).collect();
            return Ok(Reply::refuse(format!(
                "I don't know `{who}`. Name a person from the bot file ({}) or mention them.",
                known.join(", ")
            )));
        };
        let now = self.clock.now();
        let overrides = self.store.overrides(now).await?;
        let rotation = match rotation {
            Some(r) => match self.config.rotations.get(&r) {
                Some(r) => r,
                None => {
                    let known: Vec<&str> =
                        self.config.rotations.keys().map(String::as_str).collect();
                    return Ok(Reply::refuse(format!(
                        "There is no rotation `{r}`. Rotations: {}.",
                        known.join(", ")
                    )));
                }
            },
            None => {
                let held: Vec<_> = self
                    .config
                    .rotations
                    .values()
                    .filter(|r| r.holder(&overrides, now).person == person.id)
                    .collect();
                match (held.as_slice(), self.config.rotations.len()) {
                    ([one], _) => *one,
                    (_, 1) => self
                        .config
                        .rotations
                        .values()
                        .next()
                        .context("one rotation")?,
                    _ => {
                        let known: Vec<&str> =
                            self.config.rotations.keys().map(String::as_str).collect();
                        return Ok(Reply::refuse(format!(
                            "Say which rotation: /oncall override {who} {duration} <rotation> ({}).",
                            known.join(", ")
                        )));
                    }
                }
            }
        };
        let holder = rotation.holder(&overrides, now);
        if !rotation.members.contains(&person.id) && holder.person != person.id {
            let names: Vec<&str> = rotation.members.iter().map(|m| dir.name(m)).collect();
            return Ok(Reply::refuse(format!(
                "Only members of {} ({}) or whoever holds it now can hand it over.",
                rotation.name,
                names.join(", ")
            )));
        }
        let o = Override {
            rotation: rotation.id.clone(),
            person: target.id.clone(),
            from: now,
            until: later(now, duration),
            order: 0,
        };
        let mut tx = self.store.begin().await?;
        if let Some(key) = key {
            if !tx.first_time(key, now).await? {
                return Ok(Reply::private("Already handled."));
            }
        }
        tx.insert_override(&o, &person.id, now).await?;
        let text = format!(
            "🔁 {} handed {} to {} for {duration}, until {} ({}).",
            dir.name(&person.id),
            rotation.name,
            target.name,
            o.until
                .with_timezone(&rotation.timezone)
                .format("%a %d %b %H:%M"),
            rotation.timezone
        );
        tx.audit(&AuditEntry {
            run: None,
            at: now,
            actor: person.id.to_string(),
            platform: actor.platform.to_string(),
            location: actor.channel.clone(),
            action: "oncall.override".into(),
            detail: text.clone(),
        })
        .await?;
        let mut card = cards::notice(text.clone());
        card.mentions.push(target.id.clone());
        self.send_incidents(&mut tx, actor.platform, None, None, card, now)
            .await?;
        tx.commit().await?;
        Ok(Reply::changed(text))
    }

    /// A person named by key, or by a platform mention (`<@U0BRUNO>`,
    /// `<@U0BRUNO|bruno>`, `<@!284716390512837641>`, `@bruno`).
    fn person_named(&self, platform: Platform, text: &str) -> Option<Person> {
        let dir = &self.config.directory;
        let bare = text.trim().trim_start_matches('@');
        if let Some(p) = dir.person(&PersonId::new(bare)) {
            return Some(p.clone());
        }
        let inner = text
            .trim()
            .strip_prefix("<@")?
            .strip_suffix('>')?
            .trim_start_matches('!');
        let id = inner.split('|').next()?;
        dir.resolve(platform, id).cloned()
    }
}

/// `now` plus a wait, saturating instead of overflowing.
fn later(now: DateTime<Utc>, wait: Dur) -> DateTime<Utc> {
    now.checked_add_signed(wait.to_chrono())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The key of one page's direct message, so it can be edited later.
fn page_key(incident: i64, generation: u32, seq: u32, person: &PersonId) -> String {
    format!("incident:{incident}:page:{generation}:{seq}:{person}")
}

/// Whether a direct message can reach `person` on `platform`.
fn reachable(dir: &crate::domain::Directory, platform: Platform, person: &PersonId) -> bool {
    dir.person(person).is_some_and(|p| match platform {
        Platform::Slack => p.slack.is_some(),
        Platform::Discord => p.discord.is_some(),
        Platform::Shell => true,
    })
}
