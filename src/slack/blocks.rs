//! Cards as Block Kit, within Slack's limits: at most 50 blocks a message,
//! 3000 characters a section, 25 elements an actions block, 75 characters
//! of button text, 255-character action ids. A card too big for one message
//! becomes several parts, each a message of its own; nothing is left for
//! Slack to reject.
//!
//! Every message's top-level `text` — what notifications and screen
//! readers show — is the card's whole plain text (title, sections, footer)
//! clipped to Slack's 4,000 characters, not just its title: a title such as
//! "On call now" alone says nothing.

use slack_morphism::prelude::*;

pub use crate::chat::clip;
use crate::chat::{ButtonStyle, Card};
use crate::domain::Directory;

pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_ACTIONS: usize = 25;
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_ACTION_ID: usize = 255;
/// The top-level `text` shown in notifications and read by screen readers:
/// Slack advises 4,000 characters at most (and `chat.update` refuses more
/// with `msg_too_long`).
pub const MAX_FALLBACK_TEXT: usize = 4000;
/// Buttons per actions block: fewer than the limit, so rows stay readable.
const BUTTONS_PER_ROW: usize = 5;

/// Escape what Slack's mrkdwn treats as markup.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` escaped for mrkdwn and clipped to `max` characters, never cutting
/// an escape (`&amp;`) in half.
pub fn clip_escaped(text: &str, max: usize) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(max.saturating_sub(1)).collect();
    if let Some(amp) = cut.rfind('&') {
        if !cut[amp..].contains(';') {
            cut.truncate(amp);
        }
    }
    cut.push('…');
    cut
}

/// A card's top-level `text`: its plain text, escaped and clipped.
pub fn fallback_text(card: &Card) -> String {
    clip_escaped(&card.plain_text(), MAX_FALLBACK_TEXT)
}

fn mrkdwn(text: String) -> SlackBlockText {
    SlackBlockText::MarkDown(SlackBlockMarkDownText::new(text))
}

/// Sections of at most `MAX_SECTION_TEXT` characters from lines of text.
fn sections(lines: &[String]) -> Vec<SlackBlock> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in lines {
        let line = clip(line, MAX_SECTION_TEXT);
        if !current.is_empty()
            && current.chars().count() + 1 + line.chars().count() > MAX_SECTION_TEXT
        {
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(mrkdwn(std::mem::take(&mut current)))
                    .into(),
            );
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        blocks.push(SlackSectionBlock::new().with_text(mrkdwn(current)).into());
    }
    blocks
}

/// A card as one or more messages, each within Block Kit's limits.
pub fn render(card: &Card, dir: &Directory) -> Vec<SlackMessageContent> {
    let mut blocks: Vec<SlackBlock> = sections(&[format!("*{}*", escape(&card.title))]);
    for section in &card.sections {
        let mut lines = Vec::new();
        if let Some(h) = &section.heading {
            lines.push(format!("*{}*", escape(h)));
        }
        lines.extend(section.lines.iter().map(|l| escape(l)));
        blocks.extend(sections(&lines));
    }
    let mut context = Vec::new();
    if let Some(footer) = &card.footer {
        context.push(escape(footer));
    }
    if !card.mentions.is_empty() {
        let names: Vec<String> = card
            .mentions
            .iter()
            .map(|p| match dir.person(p).and_then(|p| p.slack.as_deref()) {
                Some(id) => format!("<@{id}>"),
                None => escape(dir.name(p)),
            })
            .collect();
        context.push(format!("cc {}", names.join(" ")));
    }
    if !context.is_empty() {
        let text = clip(&context.join(" · "), MAX_SECTION_TEXT);
        blocks.push(
            SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
                SlackBlockMarkDownText::new(text),
            )])
            .into(),
        );
    }
    for row in card.buttons.chunks(BUTTONS_PER_ROW) {
        let elements =
            row.iter()
                .filter(|b| b.id.len() <= MAX_ACTION_ID)
                .map(|b| {
                    let mut button = SlackBlockButtonElement::new(SlackBlockPlainTextOnly::from(
                        clip(&b.label, MAX_BUTTON_TEXT),
                    ))
                    .with_action_id(SlackActionId(b.id.clone()));
                    match b.style {
                        ButtonStyle::Primary => {
                            button = button.with_style(SlackBlockButtonStyle::Primary)
                        }
                        ButtonStyle::Danger => {
                            button = button.with_style(SlackBlockButtonStyle::Danger)
                        }
                        ButtonStyle::Default => {}
                    }
                    SlackActionBlockElement::Button(button)
                })
                .collect::<Vec<_>>();
        blocks.push(SlackActionsBlock::new(elements).into());
    }

    let fallback = fallback_text(card);
    let continued = clip_escaped(&format!("{} (continued)", card.title), MAX_FALLBACK_TEXT);
    let mut parts = Vec::new();
    let mut rest = blocks;
    loop {
        let tail = if rest.len() > MAX_BLOCKS {
            rest.split_off(MAX_BLOCKS)
        } else {
            Vec::new()
        };
        let part_text = if parts.is_empty() {
            fallback.clone()
        } else {
            continued.clone()
        };
        parts.push(
            SlackMessageContent::new()
                .with_text(part_text)
                .with_blocks(rest),
        );
        if tail.is_empty() {
            return parts;
        }
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Button;

    fn button(i: usize) -> Button {
        Button {
            id: format!("checklist.done:1:p:item{i}"),
            label: format!("Done: item number {i} {}", "x".repeat(100)),
            style: ButtonStyle::Primary,
            needs_reason: false,
        }
    }

    fn check_limits(parts: &[SlackMessageContent]) {
        for part in parts {
            let blocks = part.blocks.as_ref().unwrap();
            assert!(blocks.len() <= MAX_BLOCKS);
            for block in blocks {
                match block {
                    SlackBlock::Section(s) => match s.text.as_ref().unwrap() {
                        SlackBlockText::MarkDown(t) => {
                            assert!(t.text.chars().count() <= MAX_SECTION_TEXT)
                        }
                        SlackBlockText::Plain(t) => {
                            assert!(t.text.chars().count() <= MAX_SECTION_TEXT)
                        }
                    },
                    SlackBlock::Actions(a) => {
                        assert!(a.elements.len() <= MAX_ACTIONS);
                        for e in &a.elements {
                            let SlackActionBlockElement::Button(b) = e else {
                                panic!()
                            };
                            let text = serde_json::to_value(&b.text).unwrap();
                            assert!(
                                text["text"].as_str().unwrap().chars().count() <= MAX_BUTTON_TEXT
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn a_huge_card_is_split_within_every_limit() {
        let mut card = Card::new("t".repeat(5000));
        card = card.section(
            Some("Checklist"),
            (0..400)
                .map(|i| format!("⬜ item {i} {}", "y".repeat(200)))
                .collect(),
        );
        card.buttons = (0..300).map(button).collect();
        let parts = render(&card, &Directory::default());
        assert!(parts.len() > 1, "split into {} parts", parts.len());
        check_limits(&parts);
        // Every button survives the split.
        let count: usize = parts
            .iter()
            .flat_map(|p| p.blocks.as_ref().unwrap())
            .map(|b| match b {
                SlackBlock::Actions(a) => a.elements.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(count, 300);
    }

    #[test]
    fn the_top_level_text_carries_the_card_within_slacks_limit() {
        let card = Card::new("On call now")
            .section(
                Some("Rotations"),
                vec!["primary: Emeka Eze until Mon 30 Nov 09:00 (Europe/Berlin)".into()],
            )
            .section(Some("Open incidents"), vec!["#1 critical — <b> & c".into()]);
        let parts = render(&card, &Directory::default());
        let text = parts[0].text.as_deref().unwrap();
        assert!(text.starts_with("On call now\nRotations\n"), "{text}");
        assert!(text.contains("primary: Emeka Eze until"), "{text}");
        assert!(text.contains("&lt;b&gt; &amp; c"), "{text}");

        let huge = Card::new("t").section(None, vec!["a & b ".repeat(2000)]);
        for part in render(&huge, &Directory::default()) {
            let text = part.text.unwrap();
            assert!(text.chars().count() <= MAX_FALLBACK_TEXT);
            assert!(!text.ends_with("&…") && !text.ends_with("&am…"), "{text}");
        }
        let clipped = clip_escaped(&"&".repeat(10), 8);
        assert_eq!(clipped, "&amp;…");
    }

    #[test]
    fn text_is_escaped_and_mentions_use_slack_ids() {
        let mut dir = Directory::default();
        let id = crate::domain::PersonId::new("alice");
        dir.people.insert(
            id.clone(),
            crate::domain::Person {
                id: id.clone(),
                name: "Alice".into(),
                slack: Some("U1".into()),
                discord: None,
            },
        );
        let mut card = Card::new("a <b> & c").section(None, vec!["<!channel>".into()]);
        card.mentions.push(id);
        let json = serde_json::to_string(&render(&card, &dir)).unwrap();
        assert!(json.contains("a &lt;b&gt; &amp; c"), "{json}");
        assert!(json.contains("&lt;!channel&gt;"), "{json}");
        assert!(json.contains("cc <@U1>"), "{json}");
    }
}
