//! `tminus slack-manifest` and `tminus discord-invite`, checked against
//! what the platforms document.
//!
//! The manifest is held to Slack's app manifest reference
//! (docs.slack.dev/reference/app-manifest, and Slack's JSON schema in
//! `slackapi/manifest-schema`): only documented keys, each of its documented
//! type and length, the required ones present, no `null` and no empty list,
//! https request URLs, and the rules Slack's validator applies across keys
//! (a request URL or Socket Mode for events and interactivity, the
//! `commands` scope for slash commands, `app_mentions:read` for the
//! `app_mention` event, a bot user for bot scopes). Then every Web API
//! method the code calls is looked up in Slack's OpenAPI document, and one
//! of the scopes it accepts must be in the manifest.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::helpers::run_tminus;

fn tminus(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
    run_tminus(args, &["TMINUS_PUBLIC_URL", "DISCORD_APPLICATION_ID"], &env)
}

/// A value's documented shape.
enum Shape {
    Str {
        min: usize,
        max: usize,
    },
    HttpsUrl,
    Color,
    Bool,
    Int,
    /// A list of strings of at most `max_items`, each at most `item_max` long.
    Strings {
        max_items: usize,
        item_max: usize,
    },
    /// An object with exactly these keys known: (key, required, shape).
    Object(Vec<(&'static str, bool, Shape)>),
    /// A list of `min..=max` items of one shape.
    List {
        min: usize,
        max: usize,
        item: Box<Shape>,
    },
    /// Documented, but not something tminus sets: any value is let through.
    Any,
}

use Shape::*;

fn s(min: usize, max: usize) -> Shape {
    Str { min, max }
}

fn strings(max_items: usize, item_max: usize) -> Shape {
    Strings {
        max_items,
        item_max,
    }
}

fn flags(keys: &[&'static str]) -> Shape {
    Object(keys.iter().map(|k| (*k, false, Bool)).collect())
}

/// Slack's app manifest, as its reference documents it.
fn reference() -> Shape {
    Object(vec![
        ("$schema", false, Any),
        (
            "_metadata",
            false,
            Object(vec![
                ("major_version", false, Int),
                ("minor_version", false, Int),
            ]),
        ),
        (
            "display_information",
            true,
            Object(vec![
                ("name", true, s(1, 35)),
                ("description", false, s(1, 140)),
                ("long_description", false, s(175, 4000)),
                ("background_color", false, Color),
            ]),
        ),
        (
            "features",
            false,
            Object(vec![
                (
                    "app_home",
                    false,
                    flags(&[
                        "home_tab_enabled",
                        "messages_tab_enabled",
                        "messages_tab_read_only_enabled",
                    ]),
                ),
                (
                    "bot_user",
                    false,
                    Object(vec![
                        ("display_name", true, s(1, 80)),
                        ("always_online", false, Bool),
                    ]),
                ),
                (
                    "slash_commands",
                    false,
                    List {
                        min: 1,
                        max: 50,
                        item: Box::new(Object(vec![
                            ("command", true, s(2, 32)),
                            ("description", true, s(1, 2000)),
                            ("usage_hint", false, s(1, 1000)),
                            ("should_escape", false, Bool),
                            ("url", false, HttpsUrl),
                        ])),
                    },
                ),
                ("shortcuts", false, Any),
                ("unfurl_domains", false, strings(5, 255)),
                ("workflow_steps", false, Any),
                ("assistant_view", false, Any),
                ("agent_view", false, Any),
                ("rich_previews", false, Any),
                ("search", false, Any),
                ("functions", false, Any),
                ("code_channels", false, Any),
            ]),
        ),
        (
            "oauth_config",
            false,
            Object(vec![
                ("redirect_urls", false, strings(1000, 2500)),
                (
                    "scopes",
                    false,
                    Object(vec![
                        ("bot", false, strings(255, 50)),
                        ("user", false, strings(255, 50)),
                        ("bot_optional", false, strings(255, 50)),
                        ("user_optional", false, strings(255, 50)),
                    ]),
                ),
                ("token_management_enabled", false, Bool),
                ("pkce_enabled", false, Bool),
            ]),
        ),
        (
            "settings",
            false,
            Object(vec![
                ("allowed_ip_address_ranges", false, strings(10, 18)),
                (
                    "event_subscriptions",
                    false,
                    Object(vec![
                        ("request_url", false, HttpsUrl),
                        ("bot_events", false, strings(100, 50)),
                        ("user_events", false, strings(100, 50)),
                        ("metadata_subscriptions", false, Any),
                    ]),
                ),
                (
                    "incoming_webhooks",
                    false,
                    flags(&["incoming_webhooks_enabled"]),
                ),
                (
                    "interactivity",
                    false,
                    Object(vec![
                        ("is_enabled", true, Bool),
                        ("request_url", false, HttpsUrl),
                        ("message_menu_options_url", false, HttpsUrl),
                    ]),
                ),
                ("org_deploy_enabled", false, Bool),
                ("socket_mode_enabled", false, Bool),
                ("token_rotation_enabled", false, Bool),
                ("is_hosted", false, Bool),
                ("is_mcp_enabled", false, Bool),
                ("siws_links", false, Any),
                ("function_runtime", false, s(1, 20)),
                ("hermes_app_type", false, Any),
            ]),
        ),
        ("functions", false, Any),
        ("workflows", false, Any),
        ("datastores", false, Any),
        ("outgoing_domains", false, Any),
        ("types", false, Any),
        ("external_auth_providers", false, Any),
        ("app_directory", false, Any),
        ("metadata_events", false, Any),
        ("compliance", false, Any),
        ("mcp_servers", false, Any),
    ])
}

/// Every way `value` at `path` departs from `shape`.
fn check(path: &str, value: &Value, shape: &Shape, problems: &mut Vec<String>) {
    let mut bad = |why: String| problems.push(format!("{path}: {why}"));
    if value.is_null() {
        bad("null (Slack refuses it; leave the key out)".into());
        return;
    }
    match shape {
        Any => {}
        Bool if !value.is_boolean() => bad(format!("{value} is not a boolean")),
        Int if !value.is_i64() => bad(format!("{value} is not an integer")),
        Str { min, max } => match value.as_str() {
            Some(t) if (*min..=*max).contains(&t.chars().count()) => {}
            Some(t) => bad(format!(
                "{} characters, not {min} to {max}",
                t.chars().count()
            )),
            None => bad(format!("{value} is not a string")),
        },
        HttpsUrl => match value.as_str() {
            Some(u) if u.starts_with("https://") && u.len() > 8 && u.len() <= 3000 => {}
            _ => bad(format!("{value} is not a full https URL")),
        },
        Color => {
            let ok = value.as_str().is_some_and(|c| {
                let hex = c.strip_prefix('#').unwrap_or("x");
                (hex.len() == 3 || hex.len() == 6) && hex.chars().all(|d| d.is_ascii_hexdigit())
            });
            if !ok {
                bad(format!("{value} is not #rgb or #rrggbb"));
            }
        }
        Strings {
            max_items,
            item_max,
        } => match value.as_array() {
            Some(items) if items.is_empty() => bad("an empty list".into()),
            Some(items) if items.len() > *max_items => bad(format!("more than {max_items} items")),
            Some(items) => {
                let unique: BTreeSet<String> = items.iter().map(|i| i.to_string()).collect();
                if unique.len() != items.len() {
                    bad("repeated items".into());
                }
                for item in items {
                    if !item
                        .as_str()
                        .is_some_and(|t| !t.is_empty() && t.len() <= *item_max)
                    {
                        problems.push(format!("{path}: {item} is not a string of 1 to {item_max}"));
                    }
                }
            }
            None => bad(format!("{value} is not a list")),
        },
        List { min, max, item } => match value.as_array() {
            Some(items) if (*min..=*max).contains(&items.len()) => {
                for (i, v) in items.iter().enumerate() {
                    check(&format!("{path}[{i}]"), v, item, problems);
                }
            }
            Some(items) => bad(format!("{} items, not {min} to {max}", items.len())),
            None => bad(format!("{value} is not a list")),
        },
        Object(fields) => {
            let Some(map) = value.as_object() else {
                bad(format!("{value} is not an object"));
                return;
            };
            for key in map.keys() {
                if !fields.iter().any(|(k, _, _)| k == key) {
                    problems.push(format!("{path}.{key}: not a key of Slack's manifest"));
                }
            }
            for (key, required, shape) in fields {
                match map.get(*key) {
                    Some(v) => check(&format!("{path}.{key}"), v, shape, problems),
                    None if *required => problems.push(format!("{path}.{key}: required")),
                    None => {}
                }
            }
        }
        _ => {}
    }
}

/// The rules Slack's validator applies across keys.
fn cross_rules(m: &Value, problems: &mut Vec<String>) {
    let socket = m["settings"]["socket_mode_enabled"] == true;
    let scopes: BTreeSet<&str> = m["oauth_config"]["scopes"]["bot"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let commands = m["features"]["slash_commands"].as_array();
    if commands.is_some_and(|c| !c.is_empty()) && !scopes.contains("commands") {
        problems.push("slash commands need the commands bot scope".into());
    }
    if !scopes.is_empty() && m["features"]["bot_user"].is_null() {
        problems.push("bot scopes need features.bot_user".into());
    }
    let events = m["settings"]["event_subscriptions"]["bot_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for event in events {
        if event == "app_mention" && !scopes.contains("app_mentions:read") {
            problems.push("app_mention needs app_mentions:read".into());
        }
    }
    if !socket {
        if m["settings"].get("event_subscriptions").is_some()
            && m["settings"]["event_subscriptions"]["request_url"].is_null()
        {
            problems.push(
                "Event Subscription requires either Request URL or Socket Mode Enabled".into(),
            );
        }
        if m["settings"]["interactivity"]["is_enabled"] == true
            && m["settings"]["interactivity"]["request_url"].is_null()
        {
            problems.push("Interactivity requires a Request URL".into());
        }
        for c in commands.into_iter().flatten() {
            if c["url"].is_null() {
                problems.push(format!(
                    "{} has no url and Socket Mode is off",
                    c["command"]
                ));
            }
        }
    }
    if !m["display_information"]["name"].is_string() {
        problems.push("display_information.name is required".into());
    }
}

fn manifest(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["slack-manifest"];
    all.extend_from_slice(args);
    let (code, out, err) = tminus(&all, env);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("the manifest is JSON")
}

fn assert_fits_the_reference(m: &Value) {
    let mut problems = Vec::new();
    check("manifest", m, &reference(), &mut problems);
    cross_rules(m, &mut problems);
    assert!(problems.is_empty(), "{}\n{m:#}", problems.join("\n"));
}

#[test]
fn the_manifest_fits_slacks_reference_in_both_modes() {
    let http = manifest(&["--url", "https://tminus.example.com/"], &[]);
    assert_fits_the_reference(&http);
    let commands: Vec<(&str, &str)> = http["features"]["slash_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["command"].as_str().unwrap(), c["url"].as_str().unwrap()))
        .collect();
    assert_eq!(
        commands,
        [
            ("/deploy", "https://tminus.example.com/slack/commands"),
            ("/oncall", "https://tminus.example.com/slack/commands"),
        ]
    );
    let settings = &http["settings"];
    assert_eq!(
        settings["interactivity"]["request_url"],
        "https://tminus.example.com/slack/interactions"
    );
    assert_eq!(
        settings["event_subscriptions"]["request_url"],
        "https://tminus.example.com/slack/events"
    );
    assert_eq!(
        settings["event_subscriptions"]["bot_events"],
        serde_json::json!(["app_mention"])
    );

    // The public URL from the environment does the same.
    let from_env = manifest(&[], &[("TMINUS_PUBLIC_URL", "https://tminus.example.com")]);
    assert_eq!(from_env, http);

    let socket = manifest(&["--socket-mode"], &[]);
    assert_fits_the_reference(&socket);
    assert_eq!(socket["settings"]["socket_mode_enabled"], true);
    assert!(!socket.to_string().contains("https://tminus"), "{socket}");

    // The checker itself catches what Slack would refuse.
    let mut broken = http.clone();
    broken["settings"]["interactivity"]
        .as_object_mut()
        .unwrap()
        .remove("request_url");
    broken["display_information"]["colour"] = "#fff".into();
    broken["oauth_config"]["scopes"]["bot"] = serde_json::json!(["chat:write"]);
    let mut problems = Vec::new();
    check("manifest", &broken, &reference(), &mut problems);
    cross_rules(&broken, &mut problems);
    for wanted in [
        "Interactivity requires a Request URL",
        "manifest.display_information.colour: not a key",
        "slash commands need the commands bot scope",
        "app_mention needs app_mentions:read",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(wanted)),
            "{wanted}: {problems:?}"
        );
    }
}

#[test]
fn a_manifest_needs_an_https_url_or_socket_mode() {
    let (code, _, err) = tminus(&["slack-manifest"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--url https://YOUR-HOST") && err.contains("--socket-mode"),
        "{err}"
    );
    let (code, _, err) = tminus(
        &["slack-manifest", "--url", "http://tminus.example.com"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("only to https:// URLs"), "{err}");
}

/// The Slack Web API methods the code calls: method names in string
/// literals, and slack-morphism's calls (`chat_post_message` is
/// `chat.postMessage`).
fn methods_the_code_calls(spec: &Value) -> BTreeSet<String> {
    let known = |m: &str| spec["paths"].get(format!("/{m}")).is_some();
    let mut found = BTreeSet::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/slack");
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for literal in text.split('"').skip(1).step_by(2) {
            if literal.contains('.') && !literal.contains(' ') && known(literal) {
                found.insert(literal.to_string());
            }
        }
        for call in text.split('.').skip(1) {
            let name: String = call
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !call[name.len()..].starts_with('(') {
                continue;
            }
            let Some((family, rest)) = name.split_once('_') else {
                continue;
            };
            let mut method = format!("{family}.");
            let mut upper = false;
            for c in rest.chars() {
                match c {
                    '_' => upper = true,
                    c if upper => {
                        method.push(c.to_ascii_uppercase());
                        upper = false;
                    }
                    c => method.push(c),
                }
            }
            if known(&method) {
                found.insert(method);
            }
        }
    }
    found
}

#[test]
fn the_manifest_names_every_scope_the_code_calls_for() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/specs/slack/slack_web_openapi_v2.json"),
        )
        .expect("Slack's OpenAPI document beside the project"),
    )
    .unwrap();
    let m = manifest(&["--socket-mode"], &[]);
    let granted: BTreeSet<&str> = m["oauth_config"]["scopes"]["bot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let methods = methods_the_code_calls(&spec);
    for expected in [
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
        "conversations.open",
        "conversations.history",
        "conversations.replies",
        "views.open",
        "auth.test",
        "conversations.info",
        "users.info",
    ] {
        assert!(
            methods.contains(expected),
            "{expected} not found in src/slack: {methods:?}"
        );
    }
    for method in &methods {
        let op = spec["paths"][format!("/{method}")]
            .as_object()
            .and_then(|o| o.values().next())
            .unwrap();
        // Scopes as the document names them, the old `chat:write:bot`
        // being today's granular `chat:write`.
        let accepted: Vec<String> = op["security"][0]["slackAuth"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let s = s.as_str().unwrap();
                s.strip_suffix(":bot")
                    .or(s.strip_suffix(":user"))
                    .unwrap_or(s)
                    .to_string()
            })
            .collect();
        if accepted.iter().any(|s| s == "none") {
            continue;
        }
        assert!(
            accepted.iter().any(|s| granted.contains(s.as_str())),
            "{method} needs one of {accepted:?}; the manifest asks for {granted:?}"
        );
    }
    // The whole set, named: a scope dropped from the list (a history or
    // read scope for one kind of conversation, say) fails here even where
    // the document accepts another.
    let expected: BTreeSet<&str> = [
        "chat:write",
        "commands",
        "im:write",
        "app_mentions:read",
        "channels:history",
        "groups:history",
        "im:history",
        "channels:read",
        "groups:read",
        "users:read",
    ]
    .into();
    assert_eq!(granted, expected);
    // And the README's table names each scope with its reason.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for scope in tminus::slack::manifest::BOT_SCOPES {
        assert!(
            readme.contains(&format!("| `{}` | {} |", scope.name, scope.why)),
            "README's scope table lacks {}",
            scope.name
        );
    }
}

#[test]
fn the_discord_invite_asks_for_the_bot_its_commands_and_the_permissions_tminus_needs() {
    let (code, out, _) = tminus(
        &["discord-invite", "--guild", "1200000000000000000"],
        &[("DISCORD_APPLICATION_ID", "1100000000000000000")],
    );
    assert_eq!(code, 0);
    let link = out.trim();
    let query = link
        .strip_prefix("https://discord.com/oauth2/authorize?")
        .unwrap_or_else(|| panic!("{link}"));
    let params: Vec<(&str, &str)> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    let get = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    assert_eq!(get("client_id"), Some("1100000000000000000"));
    assert_eq!(get("scope"), Some("bot%20applications.commands"));
    assert_eq!(get("guild_id"), Some("1200000000000000000"));
    let bits: u64 = get("permissions").unwrap().parse().unwrap();
    // Discord's permission bits: View Channel, Send Messages, Embed Links,
    // Create Public Threads, Send Messages in Threads — and nothing else.
    let named = [
        (10, "View Channel"),
        (11, "Send Messages"),
        (14, "Embed Links"),
        (35, "Create Public Threads"),
        (38, "Send Messages in Threads"),
    ];
    let expected: u64 = named.iter().map(|(bit, _)| 1u64 << bit).sum();
    assert_eq!(bits, expected, "{link}");

    let (code, _, err) = tminus(&["discord-invite"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("set DISCORD_APPLICATION_ID"), "{err}");
    let (code, _, err) = tminus(&["discord-invite"], &[("DISCORD_APPLICATION_ID", "my-bot")]);
    assert_eq!(code, 1);
    assert!(err.contains("is not an application id"), "{err}");
}
