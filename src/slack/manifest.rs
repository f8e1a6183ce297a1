//! The Slack app manifest `tminus slack-manifest` prints, and the bot
//! scopes tminus asks for. Both come from the facts the code uses — the
//! slash commands the engine answers, the paths the HTTP endpoints are
//! mounted on, the event the adapter listens to — so a new command or scope
//! cannot be forgotten in the app's set-up. `doctor` checks a token's
//! granted scopes against [`BOT_SCOPES`].

use serde_json::{json, Value};

use super::inbound::{COMMANDS_PATH, EVENTS_PATH, INTERACTIONS_PATH};
use crate::engine::command::SLASH_COMMANDS;

/// A bot scope and what tminus does with it.
pub struct Scope {
    pub name: &'static str,
    pub why: &'static str,
}

/// Every bot scope tminus needs, with the reason (the README's table is
/// this list).
pub const BOT_SCOPES: &[Scope] = &[
    Scope {
        name: "chat:write",
        why: "post and edit cards, pages and summaries",
    },
    Scope {
        name: "commands",
        why: "the /deploy and /oncall slash commands",
    },
    Scope {
        name: "im:write",
        why: "open a direct message to page a person (conversations.open)",
    },
    Scope {
        name: "app_mentions:read",
        why: "answer a mention with help",
    },
    Scope {
        name: "channels:history",
        why: "after a crash or a lost answer, find a message it may already have posted in a public channel, so it is not posted twice",
    },
    Scope {
        name: "groups:history",
        why: "the same in a private channel",
    },
    Scope {
        name: "im:history",
        why: "the same in a direct message (pages)",
    },
    Scope {
        name: "channels:read",
        why: "check that the deployments and incidents channels exist and the bot is in them (doctor, start-up)",
    },
    Scope {
        name: "groups:read",
        why: "the same for a private channel",
    },
    Scope {
        name: "users:read",
        why: "check that every person's Slack id exists (doctor, start-up)",
    },
];

/// The bot event tminus subscribes to.
pub const BOT_EVENTS: &[&str] = &["app_mention"];

/// How Slack reaches tminus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// HTTP endpoints under this base URL (`https://host`, no trailing slash).
    Http(String),
    /// Socket Mode: no public URL, an app-level token instead.
    SocketMode,
}

/// Why a base URL cannot be used for Slack's request URLs.
pub fn check_base_url(url: &str) -> Result<String, String> {
    let base = url.trim().trim_end_matches('/');
    let Some(host) = base.strip_prefix("https://") else {
        return Err(format!(
            "`{url}`: Slack sends requests only to https:// URLs (or use --socket-mode)"
        ));
    };
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(['?', '#']) {
        return Err(format!(
            "`{url}` is not a base URL like https://tminus.example.com"
        ));
    }
    Ok(base.to_string())
}

/// The app manifest, as "Create New App → From an app manifest" takes it.
pub fn manifest(reach: &Reach) -> Value {
    let url = |path: &str| match reach {
        Reach::Http(base) => Some(format!("{base}{path}")),
        Reach::SocketMode => None,
    };
    let commands: Vec<Value> = SLASH_COMMANDS
        .iter()
        .map(|c| {
            let mut command = json!({
                "command": format!("/{}", c.name),
                "description": c.description,
                "usage_hint": c.hint,
                "should_escape": false,
            });
            if let Some(url) = url(COMMANDS_PATH) {
                command["url"] = url.into();
            }
            command
        })
        .collect();
    let mut events = json!({ "bot_events": BOT_EVENTS });
    let mut interactivity = json!({ "is_enabled": true });
    if let Some(u) = url(EVENTS_PATH) {
        events["request_url"] = u.into();
    }
    if let Some(u) = url(INTERACTIONS_PATH) {
        interactivity["request_url"] = u.into();
    }
    json!({
        "_metadata": { "major_version": 1, "minor_version": 1 },
        "display_information": {
            "name": "tminus",
            "description": "Runs your deployment playbook here: checklists, sign-offs, monitoring and paging",
            "background_color": "#1f2933",
            "long_description": LONG_DESCRIPTION,
        },
        "features": {
            "bot_user": { "display_name": "tminus", "always_online": true },
            "slash_commands": commands,
        },
        "oauth_config": {
            "scopes": { "bot": BOT_SCOPES.iter().map(|s| s.name).collect::<Vec<_>>() },
        },
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": false,
            "socket_mode_enabled": *reach == Reach::SocketMode,
            "token_rotation_enabled": false,
        },
    })
}

const LONG_DESCRIPTION: &str = "tminus walks the channel through a deployment runbook. \
`/deploy start <service> <version>` posts a root message in the deployments channel and one card \
per phase in its thread, with buttons to tick items, sign off for a role and advance. After the \
production deploy it posts monitoring summaries from real probes, and on an incident it pages the \
on-call people along the runbook's escalation policy until someone acknowledges. Everything anyone \
does lands in an audit log and the run's final report.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_mode_points_every_url_at_the_base_and_socket_mode_at_none() {
        let m = manifest(&Reach::Http("https://t.example.com".into()));
        let commands = m["features"]["slash_commands"].as_array().unwrap();
        let names: Vec<&str> = commands
            .iter()
            .map(|c| c["command"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["/deploy", "/oncall"]);
        assert!(commands
            .iter()
            .all(|c| c["url"] == "https://t.example.com/slack/commands"));
        assert_eq!(
            m["settings"]["interactivity"]["request_url"],
            "https://t.example.com/slack/interactions"
        );
        assert_eq!(
            m["settings"]["event_subscriptions"]["request_url"],
            "https://t.example.com/slack/events"
        );
        assert_eq!(m["settings"]["socket_mode_enabled"], false);

        let s = manifest(&Reach::SocketMode);
        assert_eq!(s["settings"]["socket_mode_enabled"], true);
        assert!(s.to_string().find("https://t.example").is_none());
        assert!(s["settings"]["interactivity"].get("request_url").is_none());
        assert!(s["features"]["slash_commands"][0].get("url").is_none());
    }

    #[test]
    fn only_https_base_urls_are_taken() {
        assert_eq!(
            check_base_url("https://t.example.com/").as_deref(),
            Ok("https://t.example.com")
        );
        assert!(check_base_url("http://t.example.com").is_err());
        assert!(check_base_url("https://").is_err());
        assert!(check_base_url("https://t.example.com/?x").is_err());
    }

    #[test]
    fn the_long_description_fits_slacks_bounds() {
        // Slack's schema: 175 to 4,000 characters.
        let n = LONG_DESCRIPTION.chars().count();
        assert!((175..=4000).contains(&n), "{n}");
    }
}
