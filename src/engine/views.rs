//! What people ask about runs without changing them: `/deploy list`,
//! `/deploy status`, `/deploy report` (the whole report, by direct message),
//! and finding the run a command means (by number, the latest, or the one
//! in production for a rollback that names none).

use anyhow::{Context, Result};

use super::effects::To;
use super::{cards, no_run, report, run_number_text, Actor, Engine, Reply};
use crate::domain::{Person, Platform, Run, Runbook};

impl Engine {
    /// `/deploy list`: the channel's recent runs, one line each.
    pub(super) async fn list(&self, platform: Platform, channel: &str) -> Result<Reply> {
        let runs = self.store.recent_runs(platform, channel, 10).await?;
        if runs.is_empty() {
            return Ok(Reply::private(
                "No deployments yet. Start one with /deploy start <service> <version>.",
            ));
        }
        let lines: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "#{} {} {} — {} — {}, {}",
                    r.number,
                    r.service,
                    r.version,
                    r.status.label(),
                    self.config().directory.name(&r.started_by),
                    r.started_at.format("%Y-%m-%d %H:%M UTC")
                )
            })
            .collect();
        Ok(Reply::private(lines.join("\n")))
    }

    /// `/deploy status [N]`: the run's current phase card.
    pub(super) async fn status(
        &self,
        platform: Platform,
        channel: &str,
        run: Option<i64>,
    ) -> Result<Reply> {
        let Some(run) = self.find_run(platform, channel, run, false).await? else {
            return Ok(no_run(run_number_text(None)));
        };
        let runbook = self.runbook(&run).await?;
        let runbook: &Runbook = &runbook;
        let phase = runbook
            .phase(&run.phase)
            .context("current phase missing from runbook")?;
        let mut reply = Reply::private(format!(
            "Deployment #{} of {} {} is {}.",
            run.number,
            run.service,
            run.version,
            run.status.label()
        ));
        reply.card = Some(cards::phase_card(
            &run,
            runbook,
            phase,
            &self.config().directory,
        ));
        Ok(reply)
    }

    /// The run `/deploy rollback <reason>` means when it names none: the one
    /// open run of the channel that has reached production. With none, or
    /// with several, the person is asked to say which, rather than rolling
    /// back a run that was never deployed or another team's release.
    pub(super) async fn rollback_target(
        &self,
        platform: Platform,
        channel: &str,
    ) -> Result<std::result::Result<Run, Reply>> {
        let mut deployed = Vec::new();
        for r in self.store.recent_runs(platform, channel, 50).await? {
            if r.status.is_open() {
                if let Some(run) = self.store.run(r.id).await? {
                    if run.t0.is_some() {
                        deployed.push(run);
                    }
                }
            }
        }
        match deployed.len() {
            1 => Ok(Ok(deployed.remove(0))),
            0 => Ok(Err(Reply::refuse(
                "No open deployment in this channel has reached production, so there is nothing to roll back. \
                 To stop one, use /deploy abort <number> <reason>.",
            ))),
            _ => {
                let numbers: Vec<String> = deployed.iter().map(|r| format!("#{}", r.number)).collect();
                Ok(Err(Reply::refuse(format!(
                    "Several deployments are in production here ({}): say which, e.g. /deploy rollback {} <reason>.",
                    numbers.join(", "),
                    deployed[0].number
                ))))
            }
        }
    }

    /// A run by number, or the latest (the latest open one if `open_only`).
    pub(super) async fn find_run(
        &self,
        platform: Platform,
        channel: &str,
        number: Option<i64>,
        open_only: bool,
    ) -> Result<Option<Run>> {
        if let Some(n) = number {
            return self.store.run_by_number(platform, channel, n).await;
        }
        let recent = self.store.recent_runs(platform, channel, 50).await?;
        let pick = if open_only {
            recent.into_iter().find(|r| r.status.is_open())
        } else {
            recent.into_iter().next()
        };
        match pick {
            Some(r) => self.store.run(r.id).await,
            None => Ok(None),
        }
    }

    /// The Markdown deployment log of a run.
    pub async fn report(&self, run: &Run) -> Result<String> {
        let audit = self.store.audit_for_run(run.id).await?;
        let ticks = self.store.ticks_for_run(run.id).await?;
        let incidents = self.store.incidents_for_run(run.id).await?;
        Ok(report::markdown(
            run,
            &*self.runbook(run).await?,
            &self.config().directory,
            &audit,
            &ticks,
            &incidents,
        ))
    }

    /// The whole report of a run, for the person who asked: a direct
    /// message of as many parts as the platform needs (an answer to a
    /// command holds a few thousand characters at most; a report can hold
    /// tens of thousands), with the run page's link in the answer and the
    /// report.
    pub(super) async fn send_report(
        &self,
        actor: &Actor,
        person: &Person,
        run: &Run,
        key: Option<&str>,
    ) -> Result<Reply> {
        let now = self.clock.now();
        let md = self.report(run).await?;
        let link = self.run_link(run, now);
        let mut tx = self.store.begin().await?;
        if let Some(key) = key {
            if !tx.first_time(key, now).await? {
                return Ok(Reply::private(
                    "Already sent: this request was handled before.",
                ));
            }
        }
        let to = To::Person(actor.platform, &person.id, Some(run.id));
        let card = cards::report_card(run, &md, link.as_deref());
        self.send(&mut tx, to, None, card, now).await?;
        tx.commit().await?;
        let mut text = format!(
            "The report of deployment #{} ({} lines) is on its way to you by direct message.",
            run.number,
            md.lines().count()
        );
        if let Some(link) = link {
            text.push_str(&format!(" Run page: {link}"));
        }
        Ok(Reply::private(text))
    }
}
