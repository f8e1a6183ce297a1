//! Cards drawn as text for the terminal. Every button gets a number the
//! first time it is drawn and keeps it for the session: a card redrawn by an
//! edit, or the same button on another card, shows the same number, so
//! `click 5` means one button however many outputs came between.

use std::collections::HashMap;
use std::io::Write;

use crate::chat::{Button, Card, Destination, Outgoing};
use crate::config::Config;

pub fn header(out: &mut impl Write, msg: &Outgoing, edited: bool) -> std::io::Result<()> {
    let place = match &msg.to {
        Destination::Channel { channel } => channel.clone(),
        Destination::Thread { channel, root } => match crate::chat::keys::run_of(root) {
            Some(run) => format!("{channel} › thread of run {run}"),
            None => format!("{channel} › thread"),
        },
        Destination::Direct { person } => format!("direct message to {person}"),
        Destination::ThreadRef { channel, .. } => format!("{channel} › thread"),
        Destination::Ephemeral { channel, user, .. } => {
            format!("{channel} (only {user} sees this)")
        }
    };
    let edited = if edited { " (edited)" } else { "" };
    writeln!(out, "── {place}{edited} ──")
}

/// The buttons drawn so far, numbered from 1 in the order first drawn.
#[derive(Default)]
pub struct Buttons {
    drawn: Vec<Button>,
    by_id: HashMap<String, usize>,
}

impl Buttons {
    /// The number of `button`, given now if it was never drawn before.
    fn number(&mut self, button: &Button) -> usize {
        match self.by_id.get(&button.id) {
            Some(&n) => {
                // The same id may come back with another label ("Undo").
                self.drawn[n - 1] = button.clone();
                n
            }
            None => {
                self.drawn.push(button.clone());
                self.by_id.insert(button.id.clone(), self.drawn.len());
                self.drawn.len()
            }
        }
    }

    /// The button drawn with number `n`.
    pub fn get(&self, n: usize) -> Option<&Button> {
        n.checked_sub(1).and_then(|i| self.drawn.get(i))
    }
}

/// Draw a card, its buttons with their session numbers.
pub fn card(
    out: &mut impl Write,
    card: &Card,
    config: &Config,
    buttons: &mut Buttons,
) -> std::io::Result<()> {
    writeln!(out, "{}", card.title)?;
    for section in &card.sections {
        if let Some(h) = &section.heading {
            writeln!(out, " {h}")?;
        }
        for line in &section.lines {
            writeln!(out, "   {line}")?;
        }
    }
    if let Some(f) = &card.footer {
        writeln!(out, " {f}")?;
    }
    if !card.mentions.is_empty() {
        let names: Vec<String> = card
            .mentions
            .iter()
            .map(|p| format!("@{}", config.directory.name(p)))
            .collect();
        writeln!(out, " cc {}", names.join(" "))?;
    }
    for b in &card.buttons {
        writeln!(out, "   [{}] {}", buttons.number(b), b.label)?;
    }
    Ok(())
}
