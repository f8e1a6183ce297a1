//! `tminus doctor`: checks a real set-up end to end and prints a checklist
//! with the exact fix for each failure — the bot file loads, the database
//! opens and its schema fits this build, and for each platform that is on:
//! the token works, the granted scopes or permissions cover what tminus
//! needs, the channels exist and the bot can post there, every person's id
//! exists, the commands are registered and the way in (signing secret,
//! public key, app token) is set. `serve` runs the platform part at start
//! and logs the first problem of each.
//!
//! The platform checks live in `slack::doctor` and `discord::doctor`, the
//! only modules that know each API; this one runs them and draws the list.

use std::fmt::Write;
use std::path::Path;

use crate::config::Config;
use crate::settings::Settings;
use crate::store::schema::{self, SchemaState};

/// One line of the checklist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was found, as a sentence: "the bot is not in #deploys".
    pub what: String,
    /// How to fix it; `None` when the check passed.
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(what: impl Into<String>) -> Check {
        Check {
            what: what.into(),
            fix: None,
        }
    }

    pub fn fail(what: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn passed(&self) -> bool {
        self.fix.is_none()
    }
}

/// How deep the platform checks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Everything (`doctor`).
    Full,
    /// What `serve` checks at start, after it has registered Discord's
    /// commands itself: that check is left out, and so is the warning that
    /// no platform is on (the API and run pages work without one).
    Startup,
}

/// A titled group of checks.
#[derive(Clone, Debug)]
pub struct Section {
    pub title: String,
    pub checks: Vec<Check>,
}

/// The whole checklist.
#[derive(Clone, Debug)]
pub struct Report {
    pub sections: Vec<Section>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.sections
            .iter()
            .all(|s| s.checks.iter().all(Check::passed))
    }

    /// The checklist as people read it, ending with a count.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let (mut passed, mut failed) = (0, 0);
        for section in &self.sections {
            let _ = writeln!(out, "{}", section.title);
            for check in &section.checks {
                match &check.fix {
                    None => {
                        passed += 1;
                        let _ = writeln!(out, "  ✓ {}", check.what);
                    }
                    Some(fix) => {
                        failed += 1;
                        let _ = writeln!(out, "  ✗ {}", check.what);
                        let _ = writeln!(out, "      fix: {fix}");
                    }
                }
            }
        }
        let _ = if failed == 0 {
            writeln!(out, "all {passed} checks passed")
        } else {
            writeln!(out, "{failed} of {} checks failed", passed + failed)
        };
        out
    }
}

/// Run every check for `config_dir`, the database (the flag, else
/// `DATABASE_URL`, else the default) and the platforms the environment
/// turns on.
pub async fn run(config_dir: &Path, db: Option<String>) -> Report {
    let mut sections = Vec::new();
    let loaded = Config::load(config_dir);
    let settings = match &loaded {
        Ok(config) => Settings::from_env(config),
        Err(_) => Settings::from_env_alone(),
    };
    let db_url = crate::app::database_url(db, &settings);
    let config = match loaded {
        Ok(c) => {
            let check = Check::pass(format!("{} loads: {}", config_dir.display(), c.summary()));
            sections.push(section("configuration", vec![check]));
            Some(c)
        }
        Err(errors) => {
            let mut lines: Vec<String> = errors.0.iter().take(5).map(|e| e.to_string()).collect();
            if errors.0.len() > 5 {
                lines.push(format!("… and {} more", errors.0.len() - 5));
            }
            let check = Check::fail(
                format!(
                    "{} has {} problem(s): {}",
                    config_dir.display(),
                    errors.0.len(),
                    lines.join("; ")
                ),
                format!(
                    "correct each file:line above; `tminus check-config --config {}` lists them all",
                    config_dir.display()
                ),
            );
            sections.push(section("configuration", vec![check]));
            None
        }
    };
    let mut checks = vec![database(&db_url).await];
    if let Err(e) = &settings.durability {
        checks.push(Check::fail(
            e.clone(),
            "set TMINUS_SQLITE_SYNCHRONOUS to normal (the default) or full, or unset it",
        ));
    }
    sections.push(section("database", checks));
    sections.extend(platforms(config.as_ref(), &settings, Depth::Full).await);
    Report { sections }
}

/// The platform sections: one per platform that is on or set in part,
/// or one failure when none is.
pub async fn platforms(config: Option<&Config>, settings: &Settings, depth: Depth) -> Vec<Section> {
    let mut sections = Vec::new();
    for incomplete in &settings.incomplete {
        let check = Check::fail(
            format!(
                "{} is set, but {} stays off without more",
                incomplete.set.join(" and "),
                incomplete.platform
            ),
            format!("set {}", incomplete.missing),
        );
        sections.push(section(incomplete.platform, vec![check]));
    }
    if let Some(slack) = &settings.slack {
        let mode = match (slack.signing_secret.is_some(), slack.app_token.is_some()) {
            (true, true) => "slack (HTTP endpoints and Socket Mode)",
            (true, false) => "slack (HTTP endpoints)",
            _ => "slack (Socket Mode)",
        };
        let checks = match config {
            Some(config) => crate::slack::doctor::checks(slack, config).await,
            None => vec![not_checked()],
        };
        sections.push(section(mode, checks));
    }
    if let Some(discord) = &settings.discord {
        let mode = if discord.public_key.is_some() {
            "discord (interactions endpoint)"
        } else {
            "discord (gateway)"
        };
        let checks = match config {
            Some(config) => crate::discord::doctor::checks(discord, config, depth).await,
            None => vec![not_checked()],
        };
        sections.push(section(mode, checks));
    }
    let none_on =
        settings.slack.is_none() && settings.discord.is_none() && settings.incomplete.is_empty();
    // `serve` without a platform still serves the API and run pages.
    if none_on && depth == Depth::Full {
        let check = Check::fail(
            "neither Slack nor Discord is on",
            "set SLACK_BOT_TOKEN with SLACK_SIGNING_SECRET or SLACK_APP_TOKEN, or DISCORD_TOKEN \
             (README: Slack, Discord); `tminus shell` needs neither",
        );
        sections.push(section("chat platforms", vec![check]));
    }
    sections
}

fn section(title: &str, checks: Vec<Check>) -> Section {
    Section {
        title: title.to_string(),
        checks,
    }
}

fn not_checked() -> Check {
    Check::fail(
        "not checked: the configuration does not load",
        "fix the configuration first",
    )
}

/// The database opens, and its schema is this build's (or behind it, which
/// `serve` catches up at start).
async fn database(url: &str) -> Check {
    let shown = redact(url);
    match schema::inspect(url).await {
        Err(e) => Check::fail(
            format!("cannot open the database {shown}: {e:#}"),
            "check DATABASE_URL (or --db): the server must be up, the user must exist and may \
             connect, and a SQLite file's directory must be readable",
        ),
        Ok(SchemaState::NotCreated) => Check::pass(format!(
            "{shown} does not exist yet; `tminus serve` creates it at first start"
        )),
        Ok(SchemaState::Checked {
            applied,
            pending,
            unknown,
            failed,
            altered,
        }) => {
            if !unknown.is_empty() {
                Check::fail(
                    format!(
                        "{shown} has migrations this build does not know ({}): a newer tminus ran on it",
                        list(&unknown)
                    ),
                    "run the tminus version that migrated it (or newer); this one must not serve it",
                )
            } else if !failed.is_empty() {
                Check::fail(
                    format!(
                        "{shown}: migration {} started and did not finish",
                        list(&failed)
                    ),
                    "restore the database from its backup, or repair the migration by hand and \
                     mark it done in _sqlx_migrations",
                )
            } else if !altered.is_empty() {
                Check::fail(
                    format!(
                        "{shown}: migration {} was applied from another text than this build's",
                        list(&altered)
                    ),
                    "use the tminus build that made this database, or restore it from a backup",
                )
            } else if pending.is_empty() {
                Check::pass(format!("{shown} opens; all {applied} migrations applied"))
            } else {
                Check::pass(format!(
                    "{shown} opens; {applied} migrations applied, {} to apply at the next start ({})",
                    pending.len(),
                    pending.join(", ")
                ))
            }
        }
    }
}

fn list(versions: &[i64]) -> String {
    versions
        .iter()
        .map(|v| format!("{v:04}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The header every set-up check's request carries, so that a proxy's
/// log (or a test's fake) can tell them from the bot's work.
pub const CHECK_HEADER: (&str, &str) = ("x-tminus-check", "set-up");

/// A database URL without its password, in the user part or in a
/// `password=` parameter.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}:***@{host}")
        }
        _ => authority.to_string(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://tminus:s3cret@db:5432/tminus"),
            "postgres://tminus:***@db:5432/tminus"
        );
        assert_eq!(redact("postgres://tminus@db/t"), "postgres://tminus@db/t");
        assert_eq!(redact("sqlite://tminus.db"), "sqlite://tminus.db");
        assert_eq!(
            redact("postgres://tminus@db/t?sslmode=require&password=s3cret"),
            "postgres://tminus@db/t?sslmode=require&password=***"
        );
        assert_eq!(redact("postgres://u:p@ss@db/t"), "postgres://u:***@db/t");
    }

    #[test]
    fn the_report_counts_and_shows_each_fix() {
        let report = Report {
            sections: vec![section(
                "slack (HTTP endpoints)",
                vec![
                    Check::pass("token works"),
                    Check::fail(
                        "the bot is not in #deploys",
                        "type /invite @tminus in #deploys",
                    ),
                ],
            )],
        };
        assert!(!report.ok());
        assert_eq!(
            report.render(),
            "slack (HTTP endpoints)\n  ✓ token works\n  ✗ the bot is not in #deploys\n      \
             fix: type /invite @tminus in #deploys\n1 of 2 checks failed\n"
        );
    }
}
