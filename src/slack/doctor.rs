//! Slack's part of `tminus doctor` (and of `serve`'s start-up check):
//! `auth.test` for the token and its granted scopes (Slack names them in
//! the `x-oauth-scopes` header of every answer), `conversations.info` for
//! each channel of the bot file, `users.info` for each person, and
//! `apps.connections.open` for a Socket Mode app token. Every call reads;
//! none posts. The calls go through plain HTTP rather than slack-morphism
//! because the scopes are in a response header it does not pass on.

use std::collections::BTreeSet;

use serde_json::Value;

use super::manifest::BOT_SCOPES;
use super::{SlackSettings, CALL_TIMEOUT};
use crate::config::Config;
use crate::doctor::{Check, CHECK_HEADER};
use crate::domain::Platform;

/// What one Web API call answered.
struct Answer {
    body: Value,
    scopes: Option<String>,
}

impl Answer {
    fn error(&self) -> Option<&str> {
        (self.body["ok"] != true).then(|| self.body["error"].as_str().unwrap_or("unknown_error"))
    }
}

struct Api<'a> {
    http: reqwest::Client,
    base: &'a str,
}

impl Api<'_> {
    async fn call(
        &self,
        token: &str,
        method: &str,
        form: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base.trim_end_matches('/')))
            .bearer_auth(token)
            .header(CHECK_HEADER.0, CHECK_HEADER.1)
            .form(form)
            .send()
            .await
            .map_err(|e| format!("cannot reach Slack at {}: {}", self.base, e.without_url()))?;
        let status = response.status();
        let scopes = response
            .headers()
            .get("x-oauth-scopes")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: Value = response
            .json()
            .await
            .map_err(|_| format!("Slack answered {method} with HTTP {status} and no JSON"))?;
        Ok(Answer { body, scopes })
    }
}

/// The checks, in order; after a token that does not work, only that.
pub async fn checks(settings: &SlackSettings, config: &Config) -> Vec<Check> {
    let http = match reqwest::Client::builder().timeout(CALL_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                format!("cannot make an HTTP client: {e}"),
                "see the log",
            )]
        }
    };
    let api = Api {
        http,
        base: &settings.api_url,
    };
    let token = settings.bot_token.expose();
    let mut out = Vec::new();
    let auth = match api.call(token, "auth.test", &[]).await {
        Err(e) => {
            out.push(Check::fail(
                e,
                "check the network and any proxy between tminus and Slack (and SLACK_API_URL if set)",
            ));
            return out;
        }
        Ok(a) => a,
    };
    if let Some(error) = auth.error() {
        out.push(bad_token(error, token));
        return out;
    }
    let bot = auth.body["user"].as_str().unwrap_or("tminus").to_string();
    let team = auth.body["team"].as_str().unwrap_or("the workspace");
    if auth.body["bot_id"].as_str().is_none_or(str::is_empty) {
        out.push(Check::fail(
            format!("SLACK_BOT_TOKEN belongs to a user ({bot}), not to a bot"),
            "use the Bot User OAuth Token (xoxb-…) from OAuth & Permissions",
        ));
        return out;
    }
    out.push(Check::pass(format!(
        "the bot token works: @{bot} in {team}"
    )));
    out.push(scopes(auth.scopes.as_deref()));
    if settings.signing_secret.is_some() {
        out.push(Check::pass(
            "SLACK_SIGNING_SECRET is set: requests to /slack/* are verified",
        ));
    }
    if let Some(app) = &settings.app_token {
        out.push(app_token(&api, app.expose()).await);
    }
    if let Some(pair) = config.channels_for(Platform::Slack) {
        let mut seen = BTreeSet::new();
        for (purpose, id) in [
            ("deployments", &pair.deployments),
            ("incidents", &pair.incidents),
        ] {
            if seen.insert(id.clone()) {
                out.push(channel(&api, token, purpose, id, &bot).await);
            }
        }
    } else {
        out.push(Check::fail(
            "the bot file has no [channels.slack]",
            "add [channels.slack] with deployments and incidents channel ids (C…)",
        ));
    }
    out.extend(people(&api, token, config).await);
    out
}

fn bad_token(error: &str, token: &str) -> Check {
    let hint = if token.starts_with("xoxb-") {
        ""
    } else {
        " (a bot token starts with xoxb-)"
    };
    let what = match error {
        "invalid_auth" | "not_authed" => {
            format!("Slack does not accept SLACK_BOT_TOKEN ({error}){hint}")
        }
        "token_revoked" | "token_expired" => {
            format!("SLACK_BOT_TOKEN was revoked or has expired ({error})")
        }
        "account_inactive" => {
            "the bot's workspace or user is deactivated (account_inactive)".to_string()
        }
        other => format!("Slack refused auth.test: {other}"),
    };
    Check::fail(
        what,
        "copy the Bot User OAuth Token (xoxb-…) from OAuth & Permissions of your app at \
         api.slack.com/apps into SLACK_BOT_TOKEN (reinstall the app if it is missing)",
    )
}

fn scopes(granted: Option<&str>) -> Check {
    let Some(granted) = granted else {
        return Check::fail(
            "Slack did not say which scopes the token has (no x-oauth-scopes header)",
            "if SLACK_API_URL points at a proxy, let it pass the x-oauth-scopes header",
        );
    };
    let granted: BTreeSet<&str> = granted.split(',').map(str::trim).collect();
    let missing: Vec<_> = BOT_SCOPES
        .iter()
        .filter(|s| !granted.contains(s.name))
        .collect();
    if missing.is_empty() {
        return Check::pass(format!(
            "the token has all {} scopes tminus needs",
            BOT_SCOPES.len()
        ));
    }
    let names: Vec<&str> = missing.iter().map(|s| s.name).collect();
    let why: Vec<String> = missing
        .iter()
        .map(|s| format!("{}: {}", s.name, s.why))
        .collect();
    Check::fail(
        format!("the token lacks {} ({})", names.join(", "), why.join("; ")),
        format!(
            "add {} under OAuth & Permissions → Bot Token Scopes (or paste the output of \
             `tminus slack-manifest` into App Manifest), then Reinstall to Workspace",
            names.join(", ")
        ),
    )
}

async fn app_token(api: &Api<'_>, token: &str) -> Check {
    let fix = "create an app-level token with the connections:write scope under Basic Information \
               → App-Level Tokens, put it (xapp-…) in SLACK_APP_TOKEN, and turn Socket Mode on";
    match api.call(token, "apps.connections.open", &[]).await {
        Err(e) => Check::fail(
            e,
            "check the network and any proxy between tminus and Slack",
        ),
        Ok(a) => match a.error() {
            None => Check::pass("SLACK_APP_TOKEN opens a Socket Mode connection"),
            Some(error) => Check::fail(format!("Slack refused SLACK_APP_TOKEN ({error})"), fix),
        },
    }
}

async fn channel(api: &Api<'_>, token: &str, purpose: &str, id: &str, bot: &str) -> Check {
    let answer = match api
        .call(token, "conversations.info", &[("channel", id)])
        .await
    {
        Err(e) => {
            return Check::fail(
                e,
                "check the network and any proxy between tminus and Slack",
            )
        }
        Ok(a) => a,
    };
    match answer.error() {
        Some("channel_not_found") => {
            return Check::fail(
                format!("the {purpose} channel {id} is not found (or it is private and the bot is not in it)"),
                format!(
                    "put the channel's id in [channels.slack] {purpose} (channel name → Copy link; \
                     the id starts with C); for a private channel, type /invite @{bot} in it first"
                ),
            )
        }
        Some("missing_scope") => {
            return Check::fail(
                format!("cannot look at the {purpose} channel {id}: the token lacks channels:read / groups:read"),
                "add channels:read and groups:read under OAuth & Permissions → Bot Token Scopes, then reinstall",
            )
        }
        Some(other) => {
            return Check::fail(
                format!("Slack refused to show the {purpose} channel {id}: {other}"),
                format!("check [channels.slack] {purpose} in the bot file"),
            )
        }
        None => {}
    }
    let c = &answer.body["channel"];
    let name = c["name"].as_str().unwrap_or(id);
    if c["is_archived"] == true {
        return Check::fail(
            format!("the {purpose} channel #{name} ({id}) is archived"),
            format!("unarchive #{name}, or name another channel in [channels.slack] {purpose}"),
        );
    }
    if c["is_member"] != true {
        return Check::fail(
            format!("the bot is not in the {purpose} channel #{name} ({id})"),
            format!("type /invite @{bot} in #{name}"),
        );
    }
    Check::pass(format!(
        "the {purpose} channel #{name} exists and the bot is in it"
    ))
}

async fn people(api: &Api<'_>, token: &str, config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let mut found = 0;
    for person in config.directory.people.values() {
        let Some(id) = person.slack.as_deref() else {
            continue;
        };
        let key = person.id.as_str();
        let fix = format!(
            "in Slack open {}'s profile → ⋮ → Copy member ID, and put it (U…) in [people.{key}] slack",
            person.name
        );
        let problem = match api.call(token, "users.info", &[("user", id)]).await {
            Err(e) => Some((e, "check the network and any proxy between tminus and Slack".to_string())),
            Ok(a) => match a.error() {
                Some("user_not_found") => Some((
                    format!("{} ([people.{key}] slack = {id}): no such Slack user", person.name),
                    fix,
                )),
                Some("missing_scope") => Some((
                    "cannot look people up: the token lacks users:read".to_string(),
                    "add users:read under OAuth & Permissions → Bot Token Scopes, then reinstall".to_string(),
                )),
                Some("ratelimited") => Some((
                    "cannot look people up now: Slack rate-limited the checks".to_string(),
                    "run `tminus doctor` again in a minute".to_string(),
                )),
                Some(other) => Some((format!("Slack refused to show {id}: {other}"), fix)),
                None if a.body["user"]["deleted"] == true => Some((
                    format!("{} ([people.{key}] slack = {id}) is deactivated in Slack", person.name),
                    format!("remove {key} from the bot file's roles and rotations, or give their new id"),
                )),
                None => None,
            },
        };
        match problem {
            Some((what, fix)) => {
                let stop = what.starts_with("cannot");
                out.push(Check::fail(what, fix));
                if stop {
                    return out;
                }
            }
            None => found += 1,
        }
    }
    if out.is_empty() {
        out.push(Check::pass(format!(
            "all {found} people with a Slack id exist in Slack"
        )));
    }
    out
}
