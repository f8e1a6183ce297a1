//! Cards as Discord messages, within Discord's limits: 2000 characters of
//! content, embeds with a 256-character title, 4096-character description
//! and 6000 characters in all, 5 action rows of 5 buttons, 80-character
//! labels and 100-character custom ids. A card too big for one message
//! becomes several parts.

use serde_json::{json, Value};

use crate::chat::clip;
use crate::chat::{ButtonStyle, Card};
use crate::domain::Directory;

pub const MAX_CONTENT: usize = 2000;
pub const MAX_TITLE: usize = 256;
/// Below the 4096 limit so title, description and footer stay under 6000.
pub const MAX_DESCRIPTION: usize = 4000;
pub const MAX_FOOTER: usize = 1000;
pub const MAX_LABEL: usize = 80;
pub const MAX_CUSTOM_ID: usize = 100;
pub const BUTTONS_PER_ROW: usize = 5;
pub const ROWS_PER_MESSAGE: usize = 5;

/// Chunks of at most `max` characters, split at line ends.
fn chunks(lines: &[String], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in lines {
        let line = clip(line, max);
        if !current.is_empty() && current.chars().count() + 1 + line.chars().count() > max {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Characters that would turn our text into Discord markdown: bold and
/// italics, underline, strike-through, spoilers, quotes, and the bracket
/// that opens a masked link (`[click-me](https://…)` shows only the words).
const MARKDOWN: [char; 6] = ['*', '_', '~', '|', '>', '['];

/// Our text with Discord markdown made literal, except inline code spans:
/// "`make test` passes" keeps its code, written as it is (inside a span
/// nothing is markdown, so a backslash there would show). A backtick with
/// no partner, and runs of three or more (which start a code block), are
/// escaped. Mentions need nothing here: an embed never notifies anyone, and
/// the content's `allowed_mentions` lets only the mentioned users through.
pub fn escape(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '`' {
            if MARKDOWN.contains(&c) {
                out.push('\\');
            }
            out.push(c);
            i += 1;
            continue;
        }
        let run = run_at(i);
        // The span closes at the next run of exactly as many backticks.
        let mut close = None;
        let mut j = i + run;
        while run <= 2 && j < chars.len() {
            if chars[j] == '`' {
                let n = run_at(j);
                if n == run {
                    close = Some(j);
                    break;
                }
                j += n;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out.extend(&chars[i..j + run]);
                i = j + run;
            }
            None => {
                out.push_str(&"\\`".repeat(run));
                i += run;
            }
        }
    }
    out
}

/// Message bodies (for create or edit) for a card, first part first.
pub fn render(card: &Card, dir: &Directory) -> Vec<Value> {
    let mut lines = Vec::new();
    for section in &card.sections {
        if let Some(h) = &section.heading {
            lines.push(format!("**{}**", escape(h)));
        }
        lines.extend(section.lines.iter().map(|l| escape(l)));
    }
    let descriptions = chunks(&lines, MAX_DESCRIPTION);
    let buttons: Vec<Value> = card
        .buttons
        .iter()
        .filter(|b| b.id.len() <= MAX_CUSTOM_ID)
        .map(|b| {
            let style = match b.style {
                ButtonStyle::Primary => 1,
                ButtonStyle::Default => 2,
                ButtonStyle::Danger => 4,
            };
            json!({"type": 2, "style": style, "label": clip(&b.label, MAX_LABEL), "custom_id": b.id})
        })
        .collect();
    let per_message = BUTTONS_PER_ROW * ROWS_PER_MESSAGE;
    let button_parts: Vec<&[Value]> = buttons.chunks(per_message).collect();
    let parts = descriptions.len().max(button_parts.len()).max(1);
    let mentions: Vec<String> = card
        .mentions
        .iter()
        .filter_map(|p| {
            dir.person(p)
                .and_then(|p| p.discord.as_deref())
                .map(|id| format!("<@{id}>"))
        })
        .collect();
    (0..parts)
        .map(|i| {
            let title = if i == 0 {
                card.title.clone()
            } else {
                format!("{} (continued)", card.title)
            };
            let mut embed = json!({ "title": clip(&title, MAX_TITLE) });
            if let Some(d) = descriptions.get(i) {
                embed["description"] = json!(d);
            }
            if i + 1 == parts {
                if let Some(f) = &card.footer {
                    embed["footer"] = json!({ "text": clip(f, MAX_FOOTER) });
                }
            }
            let rows: Vec<Value> = button_parts
                .get(i)
                .map(|b| {
                    b.chunks(BUTTONS_PER_ROW)
                        .map(|row| json!({"type": 1, "components": row}))
                        .collect()
                })
                .unwrap_or_default();
            let content = if i == 0 && !mentions.is_empty() {
                clip(&mentions.join(" "), MAX_CONTENT)
            } else {
                String::new()
            };
            json!({
                "content": content,
                "embeds": [embed],
                "components": rows,
                "allowed_mentions": {"parse": ["users"]},
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Button;

    #[test]
    fn code_spans_stay_code_and_other_markdown_is_escaped() {
        for (text, shown) in [
            ("`make test` passes", "`make test` passes"),
            (
                "Unit tests (`npm run test`) and `npm ci --production`",
                "Unit tests (`npm run test`) and `npm ci --production`",
            ),
            // Inside a span nothing is escaped; outside, everything is.
            (
                "`cargo_test *all*` on *main*",
                "`cargo_test *all*` on \\*main\\*",
            ),
            ("``a ` b`` ok", "``a ` b`` ok"),
            ("it`s", "it\\`s"),
            ("`one` and `two", "`one` and \\`two"),
            ("```rm -rf```", "\\`\\`\\`rm -rf\\`\\`\\`"),
            (
                "||spoiler|| > quote ~~gone~~ __u__",
                "\\|\\|spoiler\\|\\| \\> quote \\~\\~gone\\~\\~ \\_\\_u\\_\\_",
            ),
            (
                "[click-me](https://evil.example)",
                "\\[click-me](https://evil.example)",
            ),
        ] {
            assert_eq!(escape(text), shown, "{text}");
        }
    }

    #[test]
    fn checklist_code_renders_as_code_and_mass_mentions_stay_harmless() {
        let card = Card::new("api v1 #1 · Phase 1 of 2: Checks").section(
            Some("Checklist `pre`"),
            vec![
                "⬜ `make test` passes".into(),
                "⬜ Tell @everyone and @here in `#ops`".into(),
            ],
        );
        let parts = render(&card, &Directory::default());
        let description = parts[0]["embeds"][0]["description"].as_str().unwrap();
        assert_eq!(
            description,
            "**Checklist `pre`**\n⬜ `make test` passes\n⬜ Tell @everyone and @here in `#ops`"
        );
        assert!(!description.contains('\\'), "{description}");
        // Mass mentions sit in the embed, which notifies nobody, and the
        // content lets only users be mentioned.
        assert_eq!(parts[0]["content"], "");
        assert_eq!(parts[0]["allowed_mentions"], json!({"parse": ["users"]}));
    }

    #[test]
    fn a_huge_card_splits_within_every_limit() {
        let mut card = Card::new("t".repeat(400)).section(
            Some("Checklist"),
            (0..300)
                .map(|i| format!("item {i} {}", "y".repeat(100)))
                .collect(),
        );
        card.buttons = (0..60)
            .map(|i| Button {
                id: format!("checklist.done:1:p:i{i}"),
                label: "z".repeat(120),
                style: ButtonStyle::Primary,
                needs_reason: false,
            })
            .collect();
        card.footer = Some("f".repeat(3000));
        let parts = render(&card, &Directory::default());
        assert!(parts.len() >= 3, "{} parts", parts.len());
        let mut buttons = 0;
        for p in &parts {
            let embed = &p["embeds"][0];
            let total: usize = ["title", "description"]
                .iter()
                .map(|k| embed[k].as_str().map_or(0, |s| s.chars().count()))
                .sum::<usize>()
                + embed["footer"]["text"]
                    .as_str()
                    .map_or(0, |s| s.chars().count());
            assert!(total <= 6000 && embed["title"].as_str().unwrap().chars().count() <= MAX_TITLE);
            assert!(
                embed["description"]
                    .as_str()
                    .map_or(0, |s| s.chars().count())
                    <= 4096
            );
            let rows = p["components"].as_array().unwrap();
            assert!(rows.len() <= 5);
            for row in rows {
                let row = row["components"].as_array().unwrap();
                assert!(row.len() <= 5);
                for b in row {
                    assert!(b["label"].as_str().unwrap().chars().count() <= MAX_LABEL);
                    buttons += 1;
                }
            }
            assert!(p["content"].as_str().unwrap().chars().count() <= MAX_CONTENT);
        }
        assert_eq!(buttons, 60);
    }
}
