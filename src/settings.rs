//! Settings from the environment, read once at start. This is the only
//! module that reads environment variables (besides `main.rs`, whose log
//! filter reads `RUST_LOG`): `serve` and `shell` build a [`Settings`] from
//! the environment, tests and the benchmark build the parts they need by
//! hand, and everything else is given its settings.

use std::collections::BTreeMap;

use crate::config::{Config, Secret};
use crate::discord::{self, DiscordSettings};
use crate::domain::runbook::Probe;
use crate::domain::Dur;
use crate::slack::{self, SlackSettings};
use crate::web::access::{WebAccess, DEFAULT_TTL};

/// Everything the environment says.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DATABASE_URL`; the `--db` flag wins over it.
    pub database_url: Option<String>,
    /// `TMINUS_LISTEN`; wins over the bot file's `listen`.
    pub listen: Option<String>,
    /// Slack, when a bot token and a way in are set.
    pub slack: Option<SlackSettings>,
    /// Discord, when `DISCORD_TOKEN` is set.
    pub discord: Option<DiscordSettings>,
    /// Platforms whose variables are set in part, so that they stay off:
    /// what is set, and what is missing (`doctor` and `serve` say so).
    pub incomplete: Vec<Incomplete>,
    /// Run-page links and the web's bearer token.
    pub web: WebAccess,
    pub queue: QueueSettings,
    /// `TMINUS_SQLITE_SYNCHRONOUS`, or why its value is not one.
    pub durability: Result<crate::store::Durability, String>,
    /// Values of the variables the bot file and runbooks name (a Prometheus
    /// probe's `bearer_env`, an integration's `token_env`), by variable
    /// name; unset ones are absent.
    pub named: BTreeMap<String, Secret>,
}

/// A platform left off although some of its variables are set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    pub platform: &'static str,
    /// The variables that are set.
    pub set: Vec<&'static str>,
    /// What would turn the platform on.
    pub missing: &'static str,
}

/// How the durable queues (timers and the outbox) behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a claim on a timer or an outgoing message lasts before another
    /// process may take it over: `TMINUS_LEASE`, one minute by default, one
    /// second at the least. It must be longer than one delivery attempt takes.
    pub lease: chrono::Duration,
    /// How long a message is retried before it is recorded as failed:
    /// `TMINUS_DELIVERY_GIVE_UP`, 30 minutes by default.
    pub give_up: chrono::Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            lease: chrono::Duration::seconds(60),
            give_up: chrono::Duration::minutes(30),
        }
    }
}

impl Settings {
    /// Read the process environment, including every variable `config` names.
    pub fn from_env(config: &Config) -> Settings {
        Settings::from_lookup(config, |name| std::env::var(name).ok())
    }

    /// Build settings from any lookup of variables (tests use a map). Empty
    /// or blank values count as unset.
    pub fn from_lookup(config: &Config, lookup: impl Fn(&str) -> Option<String>) -> Settings {
        Settings::build(named_variables(config), lookup)
    }

    /// The environment when the bot file does not load (`doctor`): the
    /// variables it names are left out.
    pub fn from_env_alone() -> Settings {
        Settings::build(Vec::new(), |name| std::env::var(name).ok())
    }

    fn build(names: Vec<String>, lookup: impl Fn(&str) -> Option<String>) -> Settings {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let duration = |name: &str| var(name).and_then(|v| v.trim().parse::<Dur>().ok());
        let defaults = QueueSettings::default();
        let named = names
            .into_iter()
            .filter_map(|name| Some((name.clone(), Secret::new(var(&name)?))))
            .collect();
        let slack = slack_settings(&var);
        let discord = var("DISCORD_TOKEN").map(|token| DiscordSettings {
            token: Secret::new(token),
            public_key: var("DISCORD_PUBLIC_KEY"),
            application_id: var("DISCORD_APPLICATION_ID"),
            api_url: var("DISCORD_API_URL").unwrap_or_else(|| discord::DEFAULT_API_URL.to_string()),
        });
        // A platform that stayed off although some of its variables are set.
        let off = |on: bool, platform, names: [&'static str; 3], missing| {
            let set: Vec<&'static str> = names.into_iter().filter(|n| var(n).is_some()).collect();
            (!on && !set.is_empty()).then_some(Incomplete {
                platform,
                set,
                missing,
            })
        };
        let slack_missing = if var("SLACK_BOT_TOKEN").is_some() {
            "SLACK_SIGNING_SECRET (for the HTTP endpoints) or SLACK_APP_TOKEN (for Socket Mode)"
        } else {
            "SLACK_BOT_TOKEN (the Bot User OAuth Token, xoxb-…)"
        };
        let incomplete = [
            off(
                slack.is_some(),
                "slack",
                ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"],
                slack_missing,
            ),
            off(
                discord.is_some(),
                "discord",
                [
                    "DISCORD_TOKEN",
                    "DISCORD_PUBLIC_KEY",
                    "DISCORD_APPLICATION_ID",
                ],
                "DISCORD_TOKEN (the bot's token)",
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        Settings {
            incomplete,
            durability: var("TMINUS_SQLITE_SYNCHRONOUS").map_or(Ok(Default::default()), |v| {
                crate::store::Durability::parse(&v)
            }),
            database_url: var("DATABASE_URL"),
            listen: var("TMINUS_LISTEN"),
            slack,
            discord,
            web: WebAccess {
                secret: var("TMINUS_WEB_SECRET").map(Secret::new),
                token: var("TMINUS_WEB_TOKEN").map(Secret::new),
                public_url: var("TMINUS_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_string()),
                ttl: duration("TMINUS_WEB_LINK_TTL")
                    .filter(|d| *d > Dur::ZERO)
                    .unwrap_or(DEFAULT_TTL),
            },
            queue: QueueSettings {
                lease: duration("TMINUS_LEASE")
                    .filter(|d| d.millis() >= 1000)
                    .map_or(defaults.lease, |d| d.to_chrono()),
                give_up: duration("TMINUS_DELIVERY_GIVE_UP")
                    .map_or(defaults.give_up, |d| d.to_chrono()),
            },
            named,
        }
    }
}

/// Slack is on when a bot token and a way in (signing secret for HTTP, app
/// token for Socket Mode) are set.
fn slack_settings(var: &impl Fn(&str) -> Option<String>) -> Option<SlackSettings> {
    let bot_token = Secret::new(var("SLACK_BOT_TOKEN")?);
    let signing_secret = var("SLACK_SIGNING_SECRET").map(Secret::new);
    let app_token = var("SLACK_APP_TOKEN").map(Secret::new);
    if signing_secret.is_none() && app_token.is_none() {
        return None;
    }
    Some(SlackSettings {
        bot_token,
        signing_secret,
        app_token,
        api_url: var("SLACK_API_URL").unwrap_or_else(|| slack::DEFAULT_API_URL.to_string()),
    })
}

/// The environment variables the configuration refers to by name: a
/// Prometheus probe's `bearer_env`, an integration's `token_env`, a hook's
/// `headers_env`, a webhook's `secret_env`.
fn named_variables(config: &Config) -> Vec<String> {
    config
        .runbooks
        .values()
        .filter_map(|r| r.monitoring.as_ref())
        .flat_map(|m| &m.probes)
        .filter_map(|p| match p {
            Probe::Prometheus { bearer_env, .. } => bearer_env.clone(),
            Probe::Http { .. } => None,
        })
        .chain(config.integrations.values().map(|i| i.token_env.clone()))
        .chain(
            config
                .hooks
                .values()
                .flat_map(|h| h.headers_env.values().cloned()),
        )
        .chain(config.webhooks.values().map(|w| w.secret_env.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    fn bundled() -> Config {
        Config::load(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("bot-config")
                .as_path(),
        )
        .expect("the bundled configuration loads")
    }

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(&bundled(), |name| vars.get(name).cloned())
    }

    #[test]
    fn nothing_set_means_every_platform_off_and_the_defaults() {
        let s = settings(&[]);
        assert!(s.slack.is_none() && s.discord.is_none());
        assert_eq!(s.database_url, None);
        assert_eq!(s.listen, None);
        assert_eq!(s.queue, QueueSettings::default());
        assert!(s.web.secret.is_none() && s.web.public_url.is_none());
        assert_eq!(s.web.ttl, DEFAULT_TTL);
    }

    #[test]
    fn slack_needs_a_way_in_besides_the_bot_token() {
        assert!(settings(&[("SLACK_BOT_TOKEN", "xoxb-1")]).slack.is_none());
        let s = settings(&[("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_APP_TOKEN", "xapp-1")]);
        let slack = s.slack.expect("on with an app token");
        assert_eq!(slack.api_url, slack::DEFAULT_API_URL);
        assert!(slack.signing_secret.is_none());
        let s = settings(&[
            ("SLACK_BOT_TOKEN", "xoxb-1"),
            ("SLACK_SIGNING_SECRET", "s"),
            ("SLACK_API_URL", "http://127.0.0.1:9/api"),
        ]);
        assert_eq!(s.slack.unwrap().api_url, "http://127.0.0.1:9/api");
    }

    #[test]
    fn a_platform_set_in_part_is_off_and_says_what_is_missing() {
        let s = settings(&[("SLACK_BOT_TOKEN", "xoxb-1")]);
        assert_eq!(s.incomplete.len(), 1);
        assert_eq!(s.incomplete[0].set, ["SLACK_BOT_TOKEN"]);
        assert!(s.incomplete[0].missing.starts_with("SLACK_SIGNING_SECRET"));
        let s = settings(&[("SLACK_SIGNING_SECRET", "s"), ("DISCORD_PUBLIC_KEY", "ab")]);
        assert!(s.slack.is_none() && s.discord.is_none());
        let missing: Vec<&str> = s.incomplete.iter().map(|i| i.missing).collect();
        assert!(
            missing[0].starts_with("SLACK_BOT_TOKEN") && missing[1].starts_with("DISCORD_TOKEN")
        );
        let s = settings(&[("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_APP_TOKEN", "xapp-1")]);
        assert!(s.incomplete.is_empty());
    }

    #[test]
    fn sqlite_durability_is_normal_unless_full_is_asked_for() {
        use crate::store::Durability;
        assert_eq!(settings(&[]).durability, Ok(Durability::ProcessCrash));
        let s = settings(&[("TMINUS_SQLITE_SYNCHRONOUS", "FULL")]);
        assert_eq!(s.durability, Ok(Durability::PowerCut));
        let s = settings(&[("TMINUS_SQLITE_SYNCHRONOUS", "extra")]);
        assert!(s.durability.unwrap_err().contains("normal or full"));
    }

    #[test]
    fn blank_values_count_as_unset() {
        let s = settings(&[
            ("DISCORD_TOKEN", "  "),
            ("DATABASE_URL", ""),
            ("TMINUS_PUBLIC_URL", "https://t.example.com/"),
        ]);
        assert!(s.discord.is_none());
        assert_eq!(s.database_url, None);
        assert_eq!(s.web.public_url.as_deref(), Some("https://t.example.com"));
    }

    #[test]
    fn queue_durations_parse_and_a_lease_under_a_second_is_ignored() {
        let s = settings(&[("TMINUS_LEASE", "5s"), ("TMINUS_DELIVERY_GIVE_UP", "2m")]);
        assert_eq!(s.queue.lease, chrono::Duration::seconds(5));
        assert_eq!(s.queue.give_up, chrono::Duration::minutes(2));
        let s = settings(&[
            ("TMINUS_LEASE", "500ms"),
            ("TMINUS_DELIVERY_GIVE_UP", "soon"),
        ]);
        assert_eq!(s.queue, QueueSettings::default());
    }

    #[test]
    fn only_the_variables_the_configuration_names_are_kept() {
        let mut config = bundled();
        let monitoring = config
            .runbooks
            .values_mut()
            .find_map(|r| r.monitoring.as_mut())
            .expect("a bundled runbook monitors");
        monitoring.probes.push(Probe::Prometheus {
            name: "errors".into(),
            url: "http://127.0.0.1:9090".into(),
            query: "up".into(),
            measures: crate::domain::runbook::Measure::ErrorRate,
            bearer_env: Some("PROM_TOKEN".into()),
        });
        let vars = |name: &str| match name {
            "PROM_TOKEN" => Some("t0ken".to_string()),
            "PATH" => Some("/bin".to_string()),
            _ => None,
        };
        let s = Settings::from_lookup(&config, vars);
        assert_eq!(s.named.keys().collect::<Vec<_>>(), vec!["PROM_TOKEN"]);
        assert_eq!(s.named["PROM_TOKEN"].expose(), "t0ken");
        assert!(Settings::from_lookup(&config, |_| None).named.is_empty());
    }
}
