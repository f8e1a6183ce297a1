//! The platform-neutral message model. The engine says what to show — a
//! [`Card`] with sections, buttons and mentions — and where ([`Outgoing`]);
//! each adapter decides how it looks on its platform (Block Kit, Discord
//! components, text in a terminal). No adapter type appears here.

pub mod buttons;
pub mod keys;

use serde::{Deserialize, Serialize};

use crate::domain::{PersonId, Platform};

/// Cut `text` to at most `max` characters, marking the cut with `…`.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A non-empty string field of a platform's JSON payload, by path.
pub fn json_str<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A message as the engine means it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Card {
    pub title: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<Section>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
    /// People to notify; adapters turn them into platform mentions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<PersonId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<String>,
}

impl Card {
    pub fn new(title: impl Into<String>) -> Card {
        Card {
            title: title.into(),
            ..Card::default()
        }
    }

    pub fn section(mut self, heading: Option<&str>, lines: Vec<String>) -> Card {
        self.sections.push(Section {
            heading: heading.map(str::to_string),
            lines,
        });
        self
    }

    /// The card as plain text, one line per entry; buttons left out.
    pub fn plain_text(&self) -> String {
        let mut out = self.title.clone();
        for s in &self.sections {
            if let Some(h) = &s.heading {
                out.push('\n');
                out.push_str(h);
            }
            for l in &s.lines {
                out.push_str("\n  ");
                out.push_str(l);
            }
        }
        if let Some(f) = &self.footer {
            out.push('\n');
            out.push_str(f);
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    pub lines: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    /// Starts with one of [`buttons::PREFIXES`]; see [`buttons`].
    pub id: String,
    pub label: String,
    #[serde(default)]
    pub style: ButtonStyle,
    /// Whether pressing it needs a reason typed by the person (the domain's
    /// `Action::needs_reason`, or opening and resolving an incident).
    #[serde(default)]
    pub needs_reason: bool,
}

impl Button {
    /// A button for one of tminus's ids; whether it asks for a reason comes
    /// from what the id means ([`buttons::Pressed::wants_reason`]).
    pub fn new(id: String, label: impl Into<String>, style: ButtonStyle) -> Button {
        let needs_reason = buttons::pressed(&id, None).is_some_and(|p| p.wants_reason());
        Button {
            id,
            label: label.into(),
            style,
            needs_reason,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ButtonStyle {
    #[default]
    Default,
    Primary,
    Danger,
}

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Destination {
    /// A top-level message in a channel.
    Channel { channel: String },
    /// A reply in the thread under the message stored with `root` key.
    Thread { channel: String, root: String },
    /// A direct message to a person.
    Direct { person: PersonId },
    /// A reply under a platform message tminus did not post (e.g. a mention),
    /// named by the platform's own id for it.
    ThreadRef { channel: String, thread_ref: String },
    /// Seen only by one platform user, in a channel (and thread, if given).
    Ephemeral {
        channel: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_ref: Option<String>,
    },
}

/// One message for the outbox: where, which card, and under what key. A
/// message with a key is edited in place once posted: the first delivery
/// posts it and records the platform's id for the key, later ones update it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub platform: Platform,
    pub to: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub card: Card,
}

impl Outgoing {
    /// The ordering lane: messages to one channel (and its threads) are
    /// delivered in the order they were written.
    pub fn lane(&self) -> String {
        match &self.to {
            Destination::Channel { channel }
            | Destination::Thread { channel, .. }
            | Destination::ThreadRef { channel, .. }
            | Destination::Ephemeral { channel, .. } => channel.clone(),
            Destination::Direct { person } => format!("@{person}"),
        }
    }
}
