//! On call: `/oncall` (who holds each rotation now and until when, whom
//! each policy's steps would page, open incidents) and `/oncall override`,
//! which hands a rotation to someone for a while.

use anyhow::{Context, Result};

use super::effects::{audit_entry, To};
use super::escalation::later;
use super::{cards, Actor, Engine, Reply};
use crate::chat::Card;
use crate::domain::oncall::resolve_targets;
use crate::domain::{Dur, Incident, Override, Person, PersonId, Platform};

impl Engine {
    /// `/oncall`: who holds each rotation now and until when, each
    /// policy's steps with whom they would page now, and open incidents.
    pub(super) async fn oncall(&self, platform: Platform) -> Result<Reply> {
        let now = self.clock.now();
        let overrides = self.store.overrides(now).await?;
        let dir = &self.config().directory;
        let mut card = Card::new("On call now");
        let mut lines = Vec::new();
        for r in self.config().rotations.values() {
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
        for p in self.config().policies.values() {
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
                    resolve_targets(step, dir, &self.config().rotations, &overrides, now)
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
        let dir = &self.config().directory;
        let Some(target) = self.person_named(actor.platform, who) else {
            let known: Vec<&str> = dir.people.keys().map(|k| k.as_str()).collect();
            return Ok(Reply::refuse(format!(
                "I don't know `{who}`. Name a person from the bot file ({}) or mention them.",
                known.join(", ")
            )));
        };
        let now = self.clock.now();
        let overrides = self.store.overrides(now).await?;
        let config = self.config();
        let rotation = match rotation {
            Some(r) => match config.rotations.get(&r) {
                Some(r) => r,
                None => {
                    let known: Vec<&str> = config.rotations.keys().map(String::as_str).collect();
                    return Ok(Reply::refuse(format!(
                        "There is no rotation `{r}`. Rotations: {}.",
                        known.join(", ")
                    )));
                }
            },
            None => {
                let held: Vec<_> = config
                    .rotations
                    .values()
                    .filter(|r| r.holder(&overrides, now).person == person.id)
                    .collect();
                match (held.as_slice(), config.rotations.len()) {
                    ([one], _) => *one,
                    (_, 1) => config.rotations.values().next().context("one rotation")?,
                    _ => {
                        let known: Vec<&str> =
                            config.rotations.keys().map(String::as_str).collect();
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
        tx.audit(&audit_entry(
            None,
            person.id.as_str(),
            actor,
            "oncall.override",
            text.clone(),
            now,
        ))
        .await?;
        let mut card = cards::notice(text.clone());
        card.mentions.push(target.id.clone());
        self.send(
            &mut tx,
            To::Incidents(actor.platform, None),
            None,
            card,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Reply::changed(text))
    }

    /// A person named by key, or by a platform mention (`<@U0BRUNO>`,
    /// `<@U0BRUNO|bruno>`, `<@!284716390512837641>`, `@bruno`).
    pub(super) fn person_named(&self, platform: Platform, text: &str) -> Option<Person> {
        let dir = &self.config().directory;
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
