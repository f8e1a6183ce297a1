//! Cards drawn as text for the terminal, buttons numbered from 1.

use std::io::Write;

use crate::chat::{Button, Card, Destination, Outgoing};
use crate::config::Config;

pub fn header(out: &mut impl Write, msg: &Outgoing, edited: bool) -> std::io::Result<()> {
    let place = match &msg.to {
        Destination::Channel { channel } => channel.clone(),
        Destination::Thread { channel, root } => {
            let run = root.split(':').nth(1).unwrap_or("?");
            format!("{channel} › thread of run {run}")
        }
        Destination::Direct { person } => format!("direct message to {person}"),
        Destination::ThreadRef { channel, .. } => format!("{channel} › thread"),
        Destination::Ephemeral { channel, user, .. } => {
            format!("{channel} (only {user} sees this)")
        }
    };
    let edited = if edited { " (edited)" } else { "" };
    writeln!(out, "── {place}{edited} ──")
}

/// Draw a card; its buttons are appended to `buttons` and numbered after
/// the ones already there.
pub fn card(
    out: &mut impl Write,
    card: &Card,
    config: &Config,
    buttons: &mut Vec<Button>,
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
        buttons.push(b.clone());
        writeln!(out, "   [{}] {}", buttons.len(), b.label)?;
    }
    Ok(())
}
