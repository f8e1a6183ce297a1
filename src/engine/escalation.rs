//! Climbing an incident's escalation ladder. Every page happens inside a
//! transaction that also records it (one row per incident, climb, page
//! number and person) and queues its messages — a mention in the incidents
//! channel and a direct message with an Acknowledge button — so a page is
//! sent once however often a timer is retried, a process restarts or two
//! processes race. The next page is a timer, due the step's wait after the
//! page before it; after downtime an overdue page fires at once and the
//! ladder goes on from there. An acknowledgement that runs out climbs again.

use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::info;

use super::effects::{audit_entry, To};
use super::{cards, incident_cards, Engine, BOT};
use crate::chat::{keys, Card};
use crate::domain::oncall::{resolve_targets, Position};
use crate::domain::{Dur, Incident, PersonId, Platform, Policy, Run};
use crate::store::{PageRecord, TimerKind, Tx};

impl Engine {
    /// Page `next` now if its wait is over, and every page after it whose
    /// wait is zero; schedule the first one that must wait.
    pub(super) async fn continue_climb(
        &self,
        tx: &mut Tx,
        incident: &mut Incident,
        run: Option<&Run>,
        mut next: Position,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(policy) = self.policy_of(incident) else {
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

    pub(super) async fn schedule_page(
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
    pub(super) async fn page(
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
        let dir = &self.config().directory;
        let targets = resolve_targets(step, dir, &self.config().rotations, &overrides, now);
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
            let card = incident_cards::page_card(
                incident,
                run,
                pos.step,
                steps,
                &p.via,
                step.advice.as_deref(),
                dir,
            );
            self.send_page(
                tx,
                incident,
                (incident.generation, pos.seq),
                &p.person,
                card,
                now,
            )
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
        card.buttons = incident_cards::incident_buttons(incident);
        self.send(tx, To::Incidents(incident.platform, run), None, card, now)
            .await?;
        let detail = format!(
            "step {} of {} for incident #{}: {}",
            pos.step + 1,
            policy.name,
            incident.id,
            lines.join("; ")
        );
        let timer_actor = super::timer_actor(incident.platform);
        tx.audit(&audit_entry(
            incident.run,
            BOT,
            &timer_actor,
            "incident.paged",
            detail,
            now,
        ))
        .await?;
        if let Some(run) = run {
            self.send(
                tx,
                To::Thread(run),
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

    /// Queue page `seq` of climb `generation` in `person`'s direct messages;
    /// the page's key makes a later card for it an edit.
    async fn send_page(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        (generation, seq): (u32, u32),
        person: &PersonId,
        card: Card,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let key = keys::page(incident.id, generation, seq, person);
        let to = To::Person(incident.platform, person, incident.run);
        self.send(tx, to, Some(key), card, now).await
    }

    /// Edit every page's direct message after the incident changed state,
    /// so no Acknowledge button outlives what it stands for.
    pub(super) async fn refresh_pages(
        &self,
        tx: &mut Tx,
        incident: &Incident,
        run: Option<&Run>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(policy) = self.policy_of(incident) else {
            return Ok(());
        };
        let dir = &self.config().directory;
        for p in tx.pages_for(incident.id).await? {
            if !reachable(dir, incident.platform, &p.person) {
                continue;
            }
            let advice = policy.steps.get(p.step).and_then(|s| s.advice.as_deref());
            let card = incident_cards::page_card(
                incident,
                run,
                p.step,
                policy.steps.len(),
                &p.via,
                advice,
                dir,
            );
            self.send_page(tx, incident, (p.generation, p.seq), &p.person, card, now)
                .await?;
        }
        Ok(())
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
            format!(" by {}", self.config().directory.name(&p))
        });
        let text = format!(
            "⏰ Incident #{} was acknowledged{who} but is still not resolved: paging again from the first step.",
            incident.id
        );
        let timer_actor = super::timer_actor(incident.platform);
        tx.audit(&audit_entry(
            incident.run,
            BOT,
            &timer_actor,
            "incident.reopened",
            text.clone(),
            now,
        ))
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
}

/// `now` plus a wait, saturating instead of overflowing.
pub(super) fn later(now: DateTime<Utc>, wait: Dur) -> DateTime<Utc> {
    now.checked_add_signed(wait.to_chrono())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The key of one page's direct message, so it can be edited later.
/// Whether a direct message can reach `person` on `platform`.
pub(super) fn reachable(
    dir: &crate::domain::Directory,
    platform: Platform,
    person: &PersonId,
) -> bool {
    dir.person(person).is_some_and(|p| match platform {
        Platform::Slack => p.slack.is_some(),
        Platform::Discord => p.discord.is_some(),
        Platform::Shell => true,
    })
}
