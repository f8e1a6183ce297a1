//! `tminus shell`: the bot in a terminal. The same engine and store as the
//! chat platforms, with cards drawn as text, buttons numbered `[N]`, and a
//! virtual clock that `wait` moves forward so timers can be tried at once.
//! When standard input is not a terminal it reads commands line by line, so
//! a session can be scripted (the integration tests do).

mod render;

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use chrono::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::clock::{Clock, VirtualClock};
use crate::domain::{Dur, PersonId, Platform};
use crate::engine::{command, Actor, Engine, Request, NOT_MY_BUTTON};
use crate::scheduler::Scheduler;

const HELP: &str = "\
Commands:
  /deploy ...          a deploy command, as in chat (/deploy help lists them)
  /oncall [override …] who is on call; hand a rotation to someone for a while
  click N [reason]     press button [N] of the latest cards; reject, n/a, abort, roll back,
                       open incident and resolve need a reason
  as PERSON            act as someone else (`who` lists people)
  who                  list people and their roles
  wait DURATION        move the clock forward (e.g. 30m, 2h) and run what falls due
  reload               read bot-config/ again (live runs keep their runbook versions)
  ci WHO N PHASE/ITEM running|done|failed [URL] [note]
                       report on an item of run N as a pipeline would: WHO is an
                       integration or a hook of the bot file
  help                 this help
  quit                 leave";

/// A shell session.
pub struct Shell<W: Write> {
    engine: Engine,
    scheduler: Scheduler,
    clock: Arc<VirtualClock>,
    me: PersonId,
    channel: String,
    /// Every button drawn this session, by its number; `click` presses them.
    shown: render::Buttons,
    /// Pipeline calls the engine would have made, to print.
    calls: Arc<std::sync::Mutex<Vec<String>>>,
    owner: String,
    out: W,
}

impl<W: Write> Shell<W> {
    pub fn new(engine: Engine, clock: Arc<VirtualClock>, me: PersonId, out: W) -> Shell<W> {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let engine = engine.with_dry_hooks(calls.clone());
        let channel = engine
            .config()
            .channels_for(Platform::Shell)
            .map_or_else(|| "#deployments".to_string(), |c| c.deployments.clone());
        let scheduler = Scheduler::new(engine.clone());
        Shell {
            owner: format!("shell-{}", std::process::id()),
            engine,
            scheduler,
            clock,
            me,
            channel,
            shown: render::Buttons::default(),
            calls,
            out,
        }
    }

    /// Read commands until `quit` or the end of input.
    pub async fn run<R: AsyncBufRead + Unpin>(
        &mut self,
        input: R,
        interactive: bool,
    ) -> Result<()> {
        writeln!(
            self.out,
            "tminus shell — you are {} ({}). Type help for commands.",
            self.engine.config().directory.name(&self.me),
            self.me
        )?;
        // Deliver whatever an earlier session left queued, then anything due.
        self.drain().await?;
        self.wait(Dur::ZERO).await?;
        let mut input = input;
        let mut raw = Vec::new();
        loop {
            if interactive {
                write!(self.out, "{}> ", self.me)?;
                self.out.flush()?;
            }
            raw.clear();
            if input.read_until(b'\n', &mut raw).await? == 0 {
                break;
            }
            // A line that is not UTF-8 (a stray byte from a terminal or a
            // file) is answered, not allowed to end the session.
            let Ok(line) = std::str::from_utf8(&raw) else {
                writeln!(
                    self.out,
                    "That line is not valid UTF-8 text; type it again."
                )?;
                continue;
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !interactive {
                // Echo the script so the transcript reads like a session;
                // comments too, which lets a driving program mark its steps.
                writeln!(self.out, "{}> {line}", self.me)?;
            }
            let more = line.starts_with('#') || self.line(line).await?;
            self.out.flush()?;
            if !more {
                break;
            }
        }
        Ok(())
    }

    /// Handle one line; false to stop.
    pub async fn line(&mut self, line: &str) -> Result<bool> {
        self.dispatch(line).await
    }

    async fn dispatch(&mut self, line: &str) -> Result<bool> {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match word {
            "quit" | "exit" => return Ok(false),
            "help" => writeln!(self.out, "{HELP}")?,
            "who" => self.who()?,
            "as" => self.switch(rest)?,
            "wait" => match rest.parse::<Dur>() {
                Ok(d) => self.wait(d).await?,
                Err(e) => writeln!(self.out, "{e}")?,
            },
            "click" => self.click(rest).await?,
            "reload" => match self.engine.reload_files().await {
                Ok(done) => {
                    writeln!(self.out, "Reloaded: {}.", self.engine.config().summary())?;
                    for change in done.changes {
                        writeln!(self.out, "  {change}")?;
                    }
                }
                Err(e) => writeln!(self.out, "Not reloaded: {e:#}")?,
            },
            "ci" => self.ci(rest).await?,
            "/deploy" | "/oncall" => match command::parse_slash(word, rest) {
                Ok(cmd) => self.request(Request::Command(cmd)).await?,
                Err(e) => writeln!(self.out, "{e}")?,
            },
            other => writeln!(
                self.out,
                "Unknown command `{other}`. Type help for commands."
            )?,
        }
        Ok(true)
    }

    fn who(&mut self) -> Result<()> {
        let dir = &self.engine.config().directory;
        for p in dir.people.values() {
            let roles: Vec<&str> = dir
                .roles
                .values()
                .filter(|r| r.members.contains(&p.id))
                .map(|r| r.name.as_str())
                .collect();
            let me = if p.id == self.me { " (you)" } else { "" };
            writeln!(
                self.out,
                "  {:<10} {}{me} — {}",
                p.id,
                p.name,
                roles.join(", ")
            )?;
        }
        Ok(())
    }

    fn switch(&mut self, who: &str) -> Result<()> {
        let dir = &self.engine.config().directory;
        let id = PersonId::new(who);
        match dir.person(&id) {
            Some(p) => {
                writeln!(self.out, "You are now {} ({}).", p.name, p.id)?;
                self.me = id;
            }
            None => {
                let known: Vec<&str> = dir.people.keys().map(|k| k.as_str()).collect();
                writeln!(self.out, "No person `{who}`. People: {}.", known.join(", "))?;
            }
        }
        Ok(())
    }

    async fn click(&mut self, rest: &str) -> Result<()> {
        let (n, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let reason = Some(reason.trim().to_string()).filter(|r| !r.is_empty());
        let Some(button) = n
            .parse::<usize>()
            .ok()
            .and_then(|n| self.shown.get(n))
            .cloned()
        else {
            writeln!(
                self.out,
                "No button [{n}]. The latest cards show the buttons you can press."
            )?;
            return Ok(());
        };
        if button.needs_reason && reason.is_none() {
            writeln!(
                self.out,
                "\"{}\" needs a reason: click {n} <reason>",
                button.label
            )?;
            return Ok(());
        }
        match Request::click(&button.id, reason) {
            Some(request) => self.request(request).await,
            None => Ok(writeln!(self.out, "{NOT_MY_BUTTON}")?),
        }
    }

    /// `ci WHO N PHASE/ITEM STATUS [URL] [note]`: what a pipeline's call
    /// to the API would do.
    async fn ci(&mut self, rest: &str) -> Result<()> {
        const USAGE: &str = "usage: ci WHO N PHASE/ITEM running|done|failed [URL] [note]";
        let words: Vec<&str> = rest.split_whitespace().collect();
        let [who, n, place, status, more @ ..] = words.as_slice() else {
            return Ok(writeln!(self.out, "{USAGE}")?);
        };
        let parsed = (
            n.trim_start_matches('#').parse::<i64>().ok(),
            place.split_once('/'),
            crate::domain::ReportStatus::parse(status),
        );
        let (Some(n), Some((phase, item)), Some(status)) = parsed else {
            return Ok(writeln!(self.out, "{USAGE}")?);
        };
        let Some(run) = self
            .engine
            .store()
            .run_by_number(Platform::Shell, &self.channel, n)
            .await?
        else {
            return Ok(writeln!(self.out, "No deployment #{n} here.")?);
        };
        let config = self.engine.config();
        let caller = match (config.integrations.get(*who), config.hooks.get(*who)) {
            (Some(i), _) => i.clone(),
            (None, Some(h)) => crate::engine::hooks::hook_caller(h, &run),
            (None, None) => {
                let mut known: Vec<&str> = config.integrations.keys().map(String::as_str).collect();
                known.extend(config.hooks.keys().map(String::as_str));
                return Ok(writeln!(
                    self.out,
                    "No integration or hook `{who}`. Known: {}.",
                    known.join(", ")
                )?);
            }
        };
        let (url, note) = match more {
            [u, rest @ ..] if u.starts_with("http://") || u.starts_with("https://") => {
                (Some(u.to_string()), rest.join(" "))
            }
            rest => (None, rest.join(" ")),
        };
        let request = crate::engine::api::ItemRequest {
            phase: phase.to_string(),
            item: item.to_string(),
            status,
            url,
            note: Some(note).filter(|n| !n.is_empty()),
        };
        let answer = |_: &crate::domain::Run| (200, String::new());
        let outcome = self
            .engine
            .api_report(&caller, run.id, request, None, &answer)
            .await?;
        use crate::engine::api::ApiOutcome;
        let said = match outcome {
            ApiOutcome::Answered(..) | ApiOutcome::Replayed(..) => {
                format!("{} reported {place} {}.", caller.name, status.as_str())
            }
            ApiOutcome::NotFound(d)
            | ApiOutcome::Forbidden(d)
            | ApiOutcome::Conflict(d)
            | ApiOutcome::Unprocessable(d) => format!("Refused: {d}."),
            ApiOutcome::KeyReused => "Refused.".to_string(),
        };
        writeln!(self.out, "{said}")?;
        self.drain().await
    }

    /// What pipeline calls the timers just made (none leave the shell).
    fn show_calls(&mut self) -> Result<()> {
        let calls = std::mem::take(&mut *self.calls.lock().expect("hook log"));
        for call in calls {
            writeln!(self.out, "(pipeline call, not sent from the shell)\n{call}")?;
        }
        Ok(())
    }

    async fn request(&mut self, request: Request) -> Result<()> {
        let actor = Actor {
            platform: Platform::Shell,
            user: self.me.to_string(),
            channel: self.channel.clone(),
        };
        let reply = self.engine.handle(&actor, request, None).await;
        let prefix = if reply.private { "(only you) " } else { "" };
        writeln!(self.out, "{prefix}{}", reply.text)?;
        if let Some(card) = &reply.card {
            render::card(&mut self.out, card, &self.engine.config(), &mut self.shown)?;
        }
        self.drain().await?;
        // Work asked for at once (an item's automated checks) runs now, as
        // `serve`'s scheduler would within a second.
        if self.scheduler.run_due(self.clock.now()).await? > 0 {
            self.show_calls()?;
            self.drain().await?;
        }
        Ok(())
    }

    /// Move the clock forward by `by`, firing each timer at the moment it
    /// falls due, in order, and showing what it posted.
    async fn wait(&mut self, by: Dur) -> Result<()> {
        let target = self.clock.now() + by.to_chrono();
        let mut fired = 0;
        loop {
            match self.engine.store().next_timer_due().await? {
                Some(due) if due <= target => {
                    if due > self.clock.now() {
                        self.clock.set(due);
                    }
                    fired += self.scheduler.run_due(self.clock.now()).await?;
                    self.show_calls()?;
                    self.drain().await?;
                }
                _ => break,
            }
        }
        self.clock.set(target.max(self.clock.now()));
        if by > Dur::ZERO {
            writeln!(
                self.out,
                "It is now {}. {fired} timer(s) fired.",
                self.clock.now().format("%Y-%m-%d %H:%M UTC")
            )?;
        }
        Ok(())
    }

    /// Print every queued shell message, in order, and mark it delivered.
    async fn drain(&mut self) -> Result<()> {
        let store = self.engine.store().clone();
        loop {
            let now = self.clock.now();
            let batch = store
                .claim_messages(
                    Platform::Shell,
                    &self.owner,
                    now,
                    Duration::seconds(60),
                    100,
                )
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            for claimed in batch {
                let msg = &claimed.message;
                let edited = match &msg.key {
                    Some(key) => store.message_ref(key).await?.is_some(),
                    None => false,
                };
                render::header(&mut self.out, msg, edited)?;
                render::card(
                    &mut self.out,
                    &msg.card,
                    &self.engine.config(),
                    &mut self.shown,
                )?;
                if let Some(key) = &msg.key {
                    let shell_ref = format!("shell:{}", claimed.id);
                    store
                        .remember_message(key, Platform::Shell, &msg.lane(), &shell_ref, None, now)
                        .await?;
                }
                store.mark_delivered(claimed.id, now).await?;
            }
        }
    }
}
