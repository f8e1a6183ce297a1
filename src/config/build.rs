//! From raw files to checked [`Config`]: parse each file, then resolve every
//! reference (people, roles, rotations, policies) and check every rule,
//! collecting problems with their file, line and key.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveTime};
use serde::de::DeserializeOwned;

use super::raw::{self, S};
use super::{
    ChannelPair, Config, ConfigError, ConfigErrors, Hook, Integration, Webhook, WEBHOOK_EVENTS,
};
use crate::domain::ids::is_valid_key;
use crate::domain::runbook::{
    Measure, Monitoring, PipelineStep, Probe, Severity, SeverityRule, Stage,
    DEFAULT_PIPELINE_TIMEOUT,
};
use crate::domain::{
    Directory, Dur, Gate, HttpCheck, Item, Person, PersonId, Phase, Policy, Role, RoleId,
    RoleQuorum, Rollback, Rotation, Runbook, RunbookVersion, Step, Target,
};

/// The bot file's name inside the configuration directory.
pub const BOT_FILE: &str = "tminus.toml";
const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// A file being checked: its text, to turn byte offsets into lines.
struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn line(&self, span: &Range<usize>) -> usize {
        if span.start == 0 && span.end == 0 {
            return 0;
        }
        let at = span.start.min(self.text.len());
        self.text[..at].bytes().filter(|b| *b == b'\n').count() + 1
    }

    /// The key a parser error points at: the `key =` on its line, under the
    /// nearest `[table]` header above it.
    fn key_at(&self, offset: usize) -> String {
        let at = offset.min(self.text.len());
        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("").trim();
        let key = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.starts_with('['));
        let header = self.text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .chain(std::iter::once(line))
            .find(|l| l.starts_with('['))
            .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        match (header, key) {
            (Some(h), Some(k)) => format!("{h}.{k}"),
            (Some(h), None) => h,
            (None, Some(k)) => k,
            (None, None) => String::new(),
        }
    }
}

/// Collects problems for one file.
struct Check<'a> {
    src: &'a Source,
    errors: &'a mut Vec<ConfigError>,
}

impl Check<'_> {
    fn at(&mut self, span: &Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.src.path.clone(),
            line: self.src.line(span),
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, value: &S<String>, key: &str) -> Option<Dur> {
        match value.get_ref().parse::<Dur>() {
            Ok(d) if d > Dur::ZERO => Some(d),
            Ok(_) => {
                self.at(&value.span(), key, "must be longer than zero");
                None
            }
            Err(e) => {
                self.at(&value.span(), key, e.to_string());
                None
            }
        }
    }

    fn key(&mut self, value: &S<String>, key: &str) -> bool {
        let ok = is_valid_key(value.get_ref());
        if !ok {
            self.at(
                &value.span(),
                key,
                format!(
                    "`{}` is not a valid id: use up to 32 lowercase letters, digits, `-` or `_`",
                    value.get_ref()
                ),
            );
        }
        ok
    }

    fn role(&mut self, dir: &Directory, value: &S<String>, key: &str) -> Option<RoleId> {
        let id = RoleId::new(value.get_ref().as_str());
        if dir.roles.contains_key(&id) {
            Some(id)
        } else {
            let known: Vec<&str> = dir.roles.keys().map(|r| r.as_str()).collect();
            self.at(
                &value.span(),
                key,
                format!(
                    "unknown role `{}` (known: {})",
                    value.get_ref(),
                    known.join(", ")
                ),
            );
            None
        }
    }

    fn person(&mut self, dir: &Directory, value: &S<String>, key: &str) -> Option<PersonId> {
        let id = PersonId::new(value.get_ref().as_str());
        if dir.people.contains_key(&id) {
            Some(id)
        } else {
            self.at(
                &value.span(),
                key,
                format!(
                    "unknown person `{}`: add them under [people]",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

fn read(path: &Path, errors: &mut Vec<ConfigError>) -> Option<Source> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(Source {
            path: path.to_path_buf(),
            text,
        }),
        Err(e) => {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                line: 0,
                key: String::new(),
                message: format!("cannot read: {e}"),
            });
            None
        }
    }
}

/// Parse a file, reporting every unknown key rather than only the first:
/// serde stops at the first one, so its line is blanked (offsets, and so
/// line numbers, stay as they were) and the file is read again, until it
/// parses or fails for another reason; the rest of the file is then
/// checked as usual. The recorded errors still refuse the configuration.
fn parse<T: DeserializeOwned>(src: &Source, errors: &mut Vec<ConfigError>) -> Option<T> {
    const MAX_UNKNOWN: usize = 50;
    let mut text = std::borrow::Cow::Borrowed(src.text.as_str());
    let mut unknown = 0;
    loop {
        let e = match toml::from_str::<T>(&text) {
            // With unknown keys blanked the rest is still checked; the errors
            // already recorded refuse the configuration.
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        let is_unknown = message.starts_with("unknown field") && e.span().is_some();
        // After a blanked line, only further unknown keys are reported: any
        // other error may come from the blanking (a value over several lines).
        if unknown == 0 || is_unknown {
            errors.push(ConfigError {
                file: src.path.clone(),
                line: src.line(&span).max(1),
                key: src.key_at(span.start),
                message,
            });
        }
        if !is_unknown || unknown == MAX_UNKNOWN {
            return None;
        }
        unknown += 1;
        let at = span.start.min(text.len());
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let mut blanked = text.into_owned();
        blanked.replace_range(start..end, &" ".repeat(end - start));
        text = std::borrow::Cow::Owned(blanked);
    }
}

pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let bot = read(&dir.join(BOT_FILE), &mut errors);
    let bot_raw = bot
        .as_ref()
        .and_then(|src| parse::<raw::BotFile>(src, &mut errors).map(|b| (src, b)));
    let mut config = Config {
        dir: dir.to_path_buf(),
        listen: DEFAULT_LISTEN.to_string(),
        channels: BTreeMap::new(),
        directory: Directory::default(),
        rotations: BTreeMap::new(),
        policies: BTreeMap::new(),
        runbooks: BTreeMap::new(),
        default_runbook: String::new(),
        default_env: "production".to_string(),
        discord_guild: None,
        integrations: BTreeMap::new(),
        hooks: BTreeMap::new(),
        webhooks: BTreeMap::new(),
    };
    let mut default_runbook = None;
    let mut named_runbooks = Vec::new();
    if let Some((src, bot)) = bot_raw {
        let mut check = Check {
            src,
            errors: &mut errors,
        };
        default_runbook = bot.deploy.default_runbook.clone();
        named_runbooks = build_bot(&mut check, bot, &mut config);
    }
    let bot_ok = errors.is_empty();

    let runbook_dir = dir.join("runbooks");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&runbook_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            errors.push(ConfigError {
                file: runbook_dir.clone(),
                line: 0,
                key: String::new(),
                message: format!("cannot list runbooks: {e}"),
            });
            Vec::new()
        }
    };
    files.sort();
    let mut runbook_files = BTreeSet::new();
    for path in files {
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        runbook_files.insert(id.clone());
        let Some(src) = read(&path, &mut errors) else {
            continue;
        };
        let Some(file) = parse::<raw::RunbookFile>(&src, &mut errors) else {
            continue;
        };
        let mut check = Check {
            src: &src,
            errors: &mut errors,
        };
        if !is_valid_key(&id) {
            check.at(
                &(0..0),
                "",
                format!("the file name `{id}` must be a valid runbook id: lowercase letters, digits, `-` or `_`"),
            );
            continue;
        }
        // Without a sound bot file the references cannot be checked; the
        // runbook's own structure still can.
        if let Some(runbook) = build_runbook(&mut check, &id, file, &config, bot_ok) {
            config.runbooks.insert(id, runbook);
        }
    }

    if let (true, Some(src)) = (bot_ok, &bot) {
        let mut check = Check {
            src,
            errors: &mut errors,
        };
        check_integration_runbooks(&mut check, &named_runbooks, &runbook_files);
    }

    if bot_ok {
        if config.runbooks.is_empty() && errors.is_empty() {
            errors.push(ConfigError {
                file: runbook_dir,
                line: 0,
                key: String::new(),
                message: "no runbooks: add at least one runbooks/NAME.toml".into(),
            });
        }
        match default_runbook {
            Some(name) if !runbook_files.contains(name.get_ref()) => {
                if let Some(src) = &bot {
                    Check {
                        src,
                        errors: &mut errors,
                    }
                    .at(
                        &name.span(),
                        "deploy.default_runbook",
                        format!("no runbook named `{}` in runbooks/", name.get_ref()),
                    );
                }
            }
            Some(name) => config.default_runbook = name.into_inner(),
            None => {
                config.default_runbook = if config.runbooks.contains_key("quickstart") {
                    "quickstart".to_string()
                } else {
                    config.runbooks.keys().next().cloned().unwrap_or_default()
                }
            }
        }
    }

    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// An integration's runbooks must exist (known only once runbooks/ is read).
fn check_integration_runbooks(
    check: &mut Check<'_>,
    named: &NamedRunbooks,
    runbook_files: &BTreeSet<String>,
) {
    for (key, spans) in named {
        for (i, (name, span)) in spans.iter().enumerate() {
            if !runbook_files.contains(name) {
                check.at(
                    span,
                    format!("integrations.{key}.runbooks[{i}]"),
                    format!("no runbook named `{name}` in runbooks/"),
                );
            }
        }
    }
}

/// The runbooks each integration names, with where: (integration, [(runbook, span)]).
type NamedRunbooks = Vec<(String, Vec<(String, Range<usize>)>)>;

/// `[integrations.*]`: who may call the HTTP API and on what.
fn build_integrations(
    check: &mut Check<'_>,
    raw: BTreeMap<S<String>, raw::IntegrationRaw>,
    config: &mut Config,
) -> NamedRunbooks {
    let mut named = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (key, i) in raw {
        let path = format!("integrations.{}", key.get_ref());
        if !check.key(&key, &path) {
            continue;
        }
        let name = i.name.get_ref().trim().to_string();
        if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
            check.at(
                &i.name.span(),
                format!("{path}.name"),
                "give a display name of 1 to 80 printable characters",
            );
        } else if config
            .directory
            .people
            .contains_key(&PersonId::new(name.as_str()))
        {
            check.at(
                &i.name.span(),
                format!("{path}.name"),
                format!("`{name}` is a person's key; an integration needs a name of its own"),
            );
        } else if let Some(other) = names.insert(name.to_lowercase(), key.get_ref().clone()) {
            check.at(
                &i.name.span(),
                format!("{path}.name"),
                format!("`{name}` is already the name of integration `{other}`"),
            );
        }
        check_env_name(check, &i.token_env, &format!("{path}.token_env"));
        let env = i.token_env.get_ref();
        let services = i.services.get_ref();
        let services = if services.is_empty() {
            check.at(
                &i.services.span(),
                format!("{path}.services"),
                "list the services it may act on, or [\"*\"] for all",
            );
            Some(Vec::new())
        } else if services.iter().any(|s| s == "*") {
            None
        } else {
            Some(services.clone())
        };
        let runbooks = i.runbooks.map(|list| {
            named.push((
                key.get_ref().clone(),
                list.iter()
                    .map(|r| (r.get_ref().clone(), r.span()))
                    .collect(),
            ));
            list.into_iter().map(S::into_inner).collect()
        });
        config.integrations.insert(
            key.get_ref().clone(),
            Integration {
                id: key.into_inner(),
                name,
                token_env: env.clone(),
                services,
                runbooks,
            },
        );
    }
    named
}

/// Build the bot file into `config`; returns the runbooks integrations
/// name, to check once `runbooks/` is read.
fn build_bot(check: &mut Check<'_>, bot: raw::BotFile, config: &mut Config) -> NamedRunbooks {
    if let Some(listen) = &bot.server.listen {
        if listen.get_ref().parse::<std::net::SocketAddr>().is_err() {
            check.at(
                &listen.span(),
                "server.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:3000",
                    listen.get_ref()
                ),
            );
        }
        config.listen = listen.get_ref().clone();
    }
    config.discord_guild = bot.discord.guild;
    if let Some(env) = bot.deploy.default_env {
        config.default_env = env;
    }
    for (platform, pair) in bot.channels {
        if !["slack", "discord", "shell"].contains(&platform.get_ref().as_str()) {
            check.at(
                &platform.span(),
                format!("channels.{}", platform.get_ref()),
                "unknown platform: use slack, discord or shell",
            );
            continue;
        }
        config.channels.insert(
            platform.into_inner(),
            ChannelPair {
                deployments: pair.deployments,
                incidents: pair.incidents,
            },
        );
    }

    let dir = &mut config.directory;
    let mut platform_ids: BTreeMap<String, String> = BTreeMap::new();
    for (key, p) in bot.people {
        let path = format!("people.{}", key.get_ref());
        check.key(&key, &path);
        for (platform, user) in [("slack", &p.slack), ("discord", &p.discord)] {
            if let Some(user) = user {
                let slot = format!("{platform}:{user}");
                if let Some(other) = platform_ids.insert(slot, key.get_ref().clone()) {
                    check.at(
                        &key.span(),
                        format!("{path}.{platform}"),
                        format!("{platform} user `{user}` is already given to `{other}`"),
                    );
                }
            }
        }
        let id = PersonId::new(key.get_ref().as_str());
        dir.people.insert(
            id.clone(),
            Person {
                id,
                name: p.name,
                slack: p.slack,
                discord: p.discord,
            },
        );
    }
    if dir.people.is_empty() {
        check.at(
            &(0..0),
            "people",
            "no people: add at least one under [people]",
        );
    }
    let mut roles = BTreeMap::new();
    for (key, r) in bot.roles {
        let path = format!("roles.{}", key.get_ref());
        check.key(&key, &path);
        let mut members = Vec::new();
        for (i, m) in r.members.iter().enumerate() {
            let member_key = format!("{path}.members[{i}]");
            if let Some(id) = check.person(dir, m, &member_key) {
                if members.contains(&id) {
                    check.at(&m.span(), member_key, format!("`{id}` is listed twice"));
                } else {
                    members.push(id);
                }
            }
        }
        let id = RoleId::new(key.get_ref().as_str());
        roles.insert(
            id.clone(),
            Role {
                id,
                name: r.name,
                members,
            },
        );
    }
    dir.roles = roles;

    let declared_rotations: BTreeSet<String> =
        bot.rotations.keys().map(|k| k.get_ref().clone()).collect();
    for (key, r) in bot.rotations {
        let path = format!("rotations.{}", key.get_ref());
        check.key(&key, &path);
        if let Some(rotation) = build_rotation(check, &config.directory, &path, key.get_ref(), r) {
            config.rotations.insert(key.into_inner(), rotation);
        }
    }
    for (key, p) in bot.policies {
        let path = format!("policies.{}", key.get_ref());
        check.key(&key, &path);
        if let Some(policy) =
            build_policy(check, config, &declared_rotations, &path, key.get_ref(), p)
        {
            config.policies.insert(key.into_inner(), policy);
        }
    }
    build_hooks(check, bot.hooks, config);
    build_webhooks(check, bot.webhooks, config);
    build_integrations(check, bot.integrations, config)
}

fn build_rotation(
    check: &mut Check<'_>,
    dir: &Directory,
    path: &str,
    id: &str,
    r: raw::RotationRaw,
) -> Option<Rotation> {
    let mut members = Vec::new();
    for (i, m) in r.members.get_ref().iter().enumerate() {
        members.extend(check.person(dir, m, &format!("{path}.members[{i}]")));
    }
    let mut ok = members.len() == r.members.get_ref().len();
    if r.members.get_ref().is_empty() {
        check.at(
            &r.members.span(),
            format!("{path}.members"),
            "a rotation needs at least one member",
        );
        ok = false;
    }
    let handoff = NaiveTime::parse_from_str(r.handoff.get_ref(), "%H:%M").ok();
    if handoff.is_none() {
        check.at(
            &r.handoff.span(),
            format!("{path}.handoff"),
            format!("`{}` is not a time of day like 09:00", r.handoff.get_ref()),
        );
    }
    let timezone = r.timezone.get_ref().parse::<chrono_tz::Tz>().ok();
    if timezone.is_none() {
        check.at(
            &r.timezone.span(),
            format!("{path}.timezone"),
            format!(
                "`{}` is not an IANA time zone like Europe/Paris",
                r.timezone.get_ref()
            ),
        );
    }
    let period = match r.period.get_ref().as_str() {
        "daily" => Some(Dur::from_mins(24 * 60)),
        "weekly" => Some(Dur::from_mins(7 * 24 * 60)),
        _ => check.duration(&r.period, &format!("{path}.period")),
    };
    let start = match &r.start {
        None => NaiveDate::from_ymd_opt(2024, 1, 1),
        Some(s) => {
            let d = NaiveDate::parse_from_str(s.get_ref(), "%Y-%m-%d").ok();
            if d.is_none() {
                check.at(
                    &s.span(),
                    format!("{path}.start"),
                    "not a date like 2026-01-05",
                );
            }
            d
        }
    };
    match (ok, handoff, timezone, period, start) {
        (true, Some(handoff), Some(timezone), Some(period), Some(start)) => Some(Rotation {
            id: id.to_string(),
            name: r.name,
            members,
            handoff,
            timezone,
            period,
            start,
        }),
        _ => None,
    }
}

fn build_policy(
    check: &mut Check<'_>,
    config: &Config,
    declared_rotations: &BTreeSet<String>,
    path: &str,
    id: &str,
    p: raw::PolicyRaw,
) -> Option<Policy> {
    let before = check.errors.len();
    if p.steps.get_ref().is_empty() {
        check.at(
            &p.steps.span(),
            format!("{path}.steps"),
            "a policy needs at least one step",
        );
    }
    let mut steps = Vec::new();
    for (i, s) in p.steps.get_ref().iter().enumerate() {
        let key = format!("{path}.steps[{i}]");
        let after = match s.after.get_ref().parse::<Dur>() {
            Ok(d) => d,
            Err(e) => {
                check.at(&s.after.span(), format!("{key}.after"), e.to_string());
                Dur::ZERO
            }
        };
        let mut targets = Vec::new();
        for (j, t) in s.page.iter().enumerate() {
            let tkey = format!("{key}.page[{j}]");
            let target = match t.get_ref().split_once(':') {
                Some(("person", who)) => check
                    .person(&config.directory, &S::new(t.span(), who.to_string()), &tkey)
                    .map(Target::Person),
                Some(("role", role)) => check
                    .role(
                        &config.directory,
                        &S::new(t.span(), role.to_string()),
                        &tkey,
                    )
                    .map(Target::Role),
                Some(("rotation", r)) if declared_rotations.contains(r) => {
                    Some(Target::Rotation(r.to_string()))
                }
                Some(("rotation", r)) => {
                    check.at(&t.span(), tkey, format!("unknown rotation `{r}`"));
                    None
                }
                _ => {
                    check.at(
                        &t.span(),
                        tkey,
                        format!(
                            "`{}` must name whom to page as person:KEY, role:KEY or rotation:KEY",
                            t.get_ref()
                        ),
                    );
                    None
                }
            };
            targets.extend(target);
        }
        if s.page.is_empty() && s.advice.is_none() {
            check.at(
                &s.after.span(),
                key.clone(),
                "a step must page someone or give advice",
            );
        }
        if *s.repeat.get_ref() == 0 {
            check.at(
                &s.repeat.span(),
                format!("{key}.repeat"),
                "repeat must be at least 1",
            );
        } else if *s.repeat.get_ref() > 1 && after == Dur::ZERO {
            check.at(
                &s.repeat.span(),
                format!("{key}.repeat"),
                "a repeated step needs an `after` to wait between its pages",
            );
        }
        steps.push(Step {
            after,
            targets,
            advice: s.advice.clone(),
            repeat: (*s.repeat.get_ref()).max(1),
        });
    }
    let repeat_from = p.repeat_from.as_ref().and_then(|n| {
        let v = *n.get_ref() as usize;
        if v == 0 || v > steps.len() {
            check.at(
                &n.span(),
                format!("{path}.repeat_from"),
                format!("must be a step number from 1 to {}", steps.len()),
            );
            None
        } else {
            Some(v - 1)
        }
    });
    let ack_timeout = p
        .ack_timeout
        .as_ref()
        .and_then(|d| check.duration(d, &format!("{path}.ack_timeout")));
    let policy = Policy {
        id: id.to_string(),
        name: p.name,
        steps,
        repeat_from,
        ack_timeout,
    };
    if let (Some(n), false) = (&p.repeat_from, policy.cycle_waits()) {
        check.at(
            &n.span(),
            format!("{path}.repeat_from"),
            "the steps it starts over from never wait, so paging would never pause: give one of them an `after`",
        );
    }
    (check.errors.len() == before).then_some(policy)
}

fn build_runbook(
    check: &mut Check<'_>,
    id: &str,
    file: raw::RunbookFile,
    config: &Config,
    resolve: bool,
) -> Option<Runbook> {
    let before = check.errors.len();
    let dir = &config.directory;
    if file.phases.get_ref().is_empty() {
        check.at(
            &file.phases.span(),
            "phases",
            "a runbook needs at least one phase",
        );
    }
    // Where the production deploy item is, read from the file as written so a
    // problem elsewhere in its phase does not hide it.
    let mut production = Vec::new();
    for (i, p) in file.phases.get_ref().iter().enumerate() {
        for (j, item) in p.items.get_ref().iter().enumerate() {
            if item.production_deploy {
                production.push((
                    format!("phases[{i}].items[{j}]"),
                    item.id.span(),
                    item.optional,
                ));
            }
        }
    }
    for (key, span, _) in production.iter().skip(1) {
        check.at(
            span,
            format!("{key}.production_deploy"),
            "only one item may be marked production_deploy",
        );
    }
    for (key, span, _) in production.iter().filter(|(_, _, optional)| *optional) {
        check.at(
            span,
            format!("{key}.optional"),
            "the production deploy item cannot be optional",
        );
    }
    let has_production = !production.is_empty();
    if let Some(r) = &file.rollback {
        for (j, item) in r.items.get_ref().iter().enumerate() {
            if item.production_deploy {
                check.at(
                    &item.id.span(),
                    format!("rollback.items[{j}].production_deploy"),
                    "the rollback phase cannot hold the production deploy item",
                );
            }
        }
    }

    let mut phase_ids = BTreeSet::new();
    let mut phases = Vec::new();
    for (i, p) in file.phases.into_inner().into_iter().enumerate() {
        phases.extend(build_phase(
            check,
            config,
            &format!("phases[{i}]"),
            p,
            &mut phase_ids,
            resolve,
        ));
    }

    let rollback = file.rollback.and_then(|r| {
        let (roles_raw, phase_raw) = r.into_parts();
        if roles_raw.get_ref().is_empty() {
            check.at(
                &roles_raw.span(),
                "rollback.roles",
                "name at least one role that may roll back",
            );
        }
        let roles: Vec<RoleId> = roles_raw
            .get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                resolve_role(check, dir, r, &format!("rollback.roles[{i}]"), resolve)
            })
            .collect();
        let phase = build_phase(
            check,
            config,
            "rollback",
            phase_raw,
            &mut phase_ids,
            resolve,
        )?;
        Some(Rollback { roles, phase })
    });

    let abort_roles = file
        .abort_roles
        .iter()
        .enumerate()
        .filter_map(|(i, r)| resolve_role(check, dir, r, &format!("abort_roles[{i}]"), resolve))
        .collect();
    let signoff_reminder = file
        .signoff_reminder
        .as_ref()
        .and_then(|d| check.duration(d, "signoff_reminder"));
    if let Some(policy) = &file.escalation {
        if resolve && !config.policies.contains_key(policy.get_ref()) {
            check.at(
                &policy.span(),
                "escalation",
                format!("unknown escalation policy `{}`", policy.get_ref()),
            );
        }
    }
    let monitoring = file.monitoring.and_then(|m| {
        if !has_production {
            check.at(
                &m.schedule.span(),
                "monitoring",
                "monitoring starts at the production deploy: mark one item production_deploy = true",
            );
        }
        build_monitoring(check, m)
    });
    (check.errors.len() == before).then(|| Runbook {
        id: id.to_string(),
        name: file.name,
        description: file.description,
        phases,
        rollback,
        abort_roles,
        signoff_reminder,
        monitoring,
        escalation: file.escalation.map(|e| e.into_inner()),
        version: RunbookVersion::of(&check.src.text),
    })
}

/// Build runbook `id` from the text of a stored version, against `config`'s
/// bot file: the runbook a run pinned, as the bot file now is. Problems are
/// reported against `runbooks/ID.toml @ SHORT`, the version they are in.
pub fn pinned_runbook(config: &Config, id: &str, text: &str) -> Result<Runbook, ConfigErrors> {
    let version = RunbookVersion::of(text);
    let src = Source {
        path: PathBuf::from(format!("runbooks/{id}.toml @ {}", version.short())),
        text: text.to_string(),
    };
    let mut errors = Vec::new();
    let runbook = parse::<raw::RunbookFile>(&src, &mut errors).and_then(|file| {
        let mut check = Check {
            src: &src,
            errors: &mut errors,
        };
        build_runbook(&mut check, id, file, config, true)
    });
    match runbook {
        Some(runbook) if errors.is_empty() => Ok(runbook),
        _ => Err(ConfigErrors(errors)),
    }
}

fn resolve_role(
    check: &mut Check<'_>,
    dir: &Directory,
    role: &S<String>,
    key: &str,
    resolve: bool,
) -> Option<RoleId> {
    if resolve {
        check.role(dir, role, key)
    } else {
        Some(RoleId::new(role.get_ref().as_str()))
    }
}

/// An item's `run`, `roles` and `timeout`: the hook must be in the bot
/// file and the roles known (when the bot file could be read).
fn build_pipeline_step(
    check: &mut Check<'_>,
    config: &Config,
    key: &str,
    it: &raw::ItemRaw,
    resolve: bool,
) -> Option<PipelineStep> {
    let Some(hook) = &it.run else {
        for (what, span) in [
            ("roles", it.roles.first().map(|r| r.span())),
            ("timeout", it.timeout.as_ref().map(|t| t.span())),
        ] {
            if let Some(span) = span {
                check.at(
                    &span,
                    format!("{key}.{what}"),
                    format!("`{what}` belongs to an item with `run = \"HOOK\"`"),
                );
            }
        }
        return None;
    };
    if resolve && !config.hooks.contains_key(hook.get_ref()) {
        check.at(
            &hook.span(),
            format!("{key}.run"),
            format!(
                "no hook `{}`: define it as [hooks.{}] in tminus.toml",
                hook.get_ref(),
                hook.get_ref()
            ),
        );
    }
    if it.roles.is_empty() {
        check.at(
            &hook.span(),
            format!("{key}.roles"),
            "name the roles that may press \"Run\" (roles = [\"devops\"])",
        );
    }
    let roles = it
        .roles
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            resolve_role(
                check,
                &config.directory,
                r,
                &format!("{key}.roles[{i}]"),
                resolve,
            )
        })
        .collect();
    let timeout = match &it.timeout {
        Some(t) => check.duration(t, &format!("{key}.timeout"))?,
        None => DEFAULT_PIPELINE_TIMEOUT,
    };
    Some(PipelineStep {
        hook: hook.get_ref().clone(),
        roles,
        timeout,
    })
}

/// An http or https URL without spaces, or an error at `key`.
fn check_url(check: &mut Check<'_>, url: &S<String>, key: &str) {
    let u = url.get_ref();
    let ok = (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() > "https://".len()
        && !u.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        check.at(
            &url.span(),
            key,
            format!("`{u}` is not an http or https URL"),
        );
    }
}

/// An environment variable's name (`TMINUS_CI_TOKEN`), or an error at `key`.
fn check_env_name(check: &mut Check<'_>, name: &S<String>, key: &str) {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !n.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        check.at(
            &name.span(),
            key,
            format!("`{n}` is not an environment variable name like TMINUS_CI_TOKEN"),
        );
    }
}

/// `[webhooks.*]`: endpoints subscribed to events.
fn build_webhooks(
    check: &mut Check<'_>,
    raw: BTreeMap<S<String>, raw::WebhookRaw>,
    config: &mut Config,
) {
    for (key, w) in raw {
        let path = format!("webhooks.{}", key.get_ref());
        if !check.key(&key, &path) {
            continue;
        }
        check_url(check, &w.url, &format!("{path}.url"));
        check_env_name(check, &w.secret_env, &format!("{path}.secret_env"));
        if w.events.get_ref().is_empty() {
            check.at(
                &w.events.span(),
                format!("{path}.events"),
                format!("subscribe to at least one of {}", WEBHOOK_EVENTS.join(", ")),
            );
        }
        for (i, e) in w.events.get_ref().iter().enumerate() {
            if !WEBHOOK_EVENTS.contains(&e.get_ref().as_str()) {
                check.at(
                    &e.span(),
                    format!("{path}.events[{i}]"),
                    format!(
                        "unknown event `{}`: use {}",
                        e.get_ref(),
                        WEBHOOK_EVENTS.join(", ")
                    ),
                );
            }
        }
        config.webhooks.insert(
            key.get_ref().clone(),
            Webhook {
                id: key.into_inner(),
                url: w.url.into_inner(),
                secret_env: w.secret_env.into_inner(),
                events: w
                    .events
                    .into_inner()
                    .into_iter()
                    .map(S::into_inner)
                    .collect(),
            },
        );
    }
}

/// `[hooks.*]`: the calls that start pipelines.
fn build_hooks(check: &mut Check<'_>, raw: BTreeMap<S<String>, raw::HookRaw>, config: &mut Config) {
    for (key, h) in raw {
        let path = format!("hooks.{}", key.get_ref());
        if !check.key(&key, &path) {
            continue;
        }
        check_url(check, &h.url, &format!("{path}.url"));
        let url = h.url.get_ref();
        let method = h.method.get_ref().to_ascii_uppercase();
        if !["POST", "PUT", "PATCH"].contains(&method.as_str()) {
            check.at(
                &h.method.span(),
                format!("{path}.method"),
                "a hook's method is POST, PUT or PATCH",
            );
        }
        let name = h.name.get_ref().trim().to_string();
        if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
            check.at(
                &h.name.span(),
                format!("{path}.name"),
                "give a display name of 1 to 80 printable characters",
            );
        } else if config
            .directory
            .people
            .contains_key(&PersonId::new(name.as_str()))
        {
            check.at(
                &h.name.span(),
                format!("{path}.name"),
                format!("`{name}` is a person's key; a hook needs a name of its own"),
            );
        }
        let body = match h.body.map(serde_json::to_value) {
            Some(Ok(v)) => {
                for name in super::unknown_placeholders(&v) {
                    check.at(
                        &key.span(),
                        format!("{path}.body"),
                        format!(
                            "unknown placeholder {{{{{name}}}}}: use {}",
                            super::PLACEHOLDERS.join(", ")
                        ),
                    );
                }
                Some(v)
            }
            Some(Err(e)) => {
                check.at(
                    &key.span(),
                    format!("{path}.body"),
                    format!("not JSON: {e}"),
                );
                None
            }
            None => None,
        };
        config.hooks.insert(
            key.get_ref().clone(),
            Hook {
                id: key.into_inner(),
                name,
                url: url.clone(),
                method,
                headers: h.headers,
                headers_env: h
                    .headers_env
                    .into_iter()
                    .map(|(k, v)| (k, v.into_inner()))
                    .collect(),
                body,
            },
        );
    }
}

fn build_phase(
    check: &mut Check<'_>,
    config: &Config,
    path: &str,
    p: raw::PhaseRaw,
    phase_ids: &mut BTreeSet<String>,
    resolve: bool,
) -> Option<Phase> {
    let dir = &config.directory;
    let before = check.errors.len();
    if check.key(&p.id, &format!("{path}.id")) && !phase_ids.insert(p.id.get_ref().clone()) {
        check.at(
            &p.id.span(),
            format!("{path}.id"),
            format!("duplicate phase id `{}`", p.id.get_ref()),
        );
    }
    if p.items.get_ref().is_empty() {
        check.at(
            &p.id.span(),
            format!("{path}.items"),
            format!(
                "phase `{}` is empty: give it at least one item",
                p.id.get_ref()
            ),
        );
    }
    let mut item_ids = BTreeSet::new();
    let mut items = Vec::new();
    for (i, it) in p.items.into_inner().into_iter().enumerate() {
        let key = format!("{path}.items[{i}]");
        if check.key(&it.id, &format!("{key}.id")) && !item_ids.insert(it.id.get_ref().clone()) {
            check.at(
                &it.id.span(),
                format!("{key}.id"),
                format!("duplicate item id `{}`", it.id.get_ref()),
            );
        }
        if it.text.trim().is_empty() {
            check.at(&it.id.span(), format!("{key}.text"), "an item needs text");
        }
        let pipeline = build_pipeline_step(check, config, &key, &it, resolve);
        let item_check = it
            .check
            .and_then(|c| build_check(check, &format!("{key}.check"), c));
        items.push(Item {
            id: it.id.into_inner(),
            text: it.text,
            optional: it.optional,
            check: item_check,
            production_deploy: it.production_deploy,
            pipeline,
        });
    }
    let mut signoffs: Vec<RoleQuorum> = Vec::new();
    for (i, s) in p.signoffs.iter().enumerate() {
        let key = format!("{path}.signoffs[{i}]");
        let Some(role) = resolve_role(check, dir, &s.role, &format!("{key}.role"), resolve) else {
            continue;
        };
        let quorum = *s.quorum.get_ref();
        if signoffs.iter().any(|q| q.role == role) {
            check.at(
                &s.role.span(),
                format!("{key}.role"),
                format!("role `{role}` is listed twice"),
            );
        }
        if quorum == 0 {
            check.at(
                &s.quorum.span(),
                format!("{key}.quorum"),
                "quorum must be at least 1",
            );
        } else if let Some(r) = dir.role(&role).filter(|_| resolve) {
            if quorum as usize > r.members.len() {
                check.at(
                    &s.quorum.span(),
                    format!("{key}.quorum"),
                    format!(
                        "quorum {quorum} is larger than role `{role}`, which has {} member(s)",
                        r.members.len()
                    ),
                );
            }
        }
        signoffs.push(RoleQuorum { role, quorum });
    }
    if p.four_eyes && p.signoffs.is_empty() {
        check.at(
            &p.id.span(),
            format!("{path}.four_eyes"),
            "four_eyes needs sign-offs to apply to",
        );
    }
    (check.errors.len() == before).then(|| Phase {
        id: p.id.into_inner(),
        title: p.title,
        items,
        gate: Gate {
            signoffs,
            four_eyes: p.four_eyes,
        },
    })
}

fn build_check(check: &mut Check<'_>, key: &str, c: raw::CheckRaw) -> Option<HttpCheck> {
    let url = c.url.get_ref();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        check.at(
            &c.url.span(),
            format!("{key}.url"),
            format!("`{url}` is not an http(s) URL"),
        );
        return None;
    }
    if !(100..=599).contains(&c.expect_status) {
        check.at(
            &c.url.span(),
            format!("{key}.expect_status"),
            "not an HTTP status",
        );
        return None;
    }
    let timeout = match &c.timeout {
        Some(t) => check.duration(t, &format!("{key}.timeout"))?,
        None => Dur::from_secs(5),
    };
    Some(HttpCheck {
        url: c.url.into_inner(),
        expect_status: c.expect_status,
        timeout,
        body_contains: c.body_contains,
    })
}

fn build_monitoring(check: &mut Check<'_>, m: raw::MonitoringRaw) -> Option<Monitoring> {
    let before = check.errors.len();
    let mut schedule = Vec::new();
    let mut last_until = Dur::ZERO;
    if m.schedule.get_ref().is_empty() {
        check.at(
            &m.schedule.span(),
            "monitoring.schedule",
            "give at least one stage",
        );
    }
    for (i, st) in m.schedule.get_ref().iter().enumerate() {
        let key = format!("monitoring.schedule[{i}]");
        let every = check.duration(&st.every, &format!("{key}.every"));
        let until = check.duration(&st.until, &format!("{key}.until"));
        if let (Some(every), Some(until)) = (every, until) {
            if until <= last_until {
                check.at(
                    &st.until.span(),
                    format!("{key}.until"),
                    "stages must end later than the one before",
                );
            } else if every.millis() > until.millis() - last_until.millis() {
                check.at(
                    &st.every.span(),
                    format!("{key}.every"),
                    "longer than the stage itself",
                );
            }
            last_until = last_until.max(until);
            schedule.push(Stage { every, until });
        }
    }
    let mut names = BTreeSet::new();
    let mut probes = Vec::new();
    for (i, p) in m.probes.into_iter().enumerate() {
        let key = format!("monitoring.probes[{i}]");
        if !names.insert(p.name.get_ref().clone()) {
            check.at(
                &p.name.span(),
                format!("{key}.name"),
                format!("duplicate probe `{}`", p.name.get_ref()),
            );
        }
        let name = p.name.get_ref().clone();
        match (p.http, p.prometheus) {
            (Some(http), None) => {
                if let Some(c) = build_check(check, &format!("{key}.http"), http) {
                    probes.push(Probe::Http { name, check: c });
                }
            }
            (None, Some(prom)) => {
                let measures = match prom.measures.get_ref().as_str() {
                    "error_rate" => Some(Measure::ErrorRate),
                    "latency" => Some(Measure::Latency),
                    other => {
                        check.at(
                            &prom.measures.span(),
                            format!("{key}.prometheus.measures"),
                            format!("`{other}` must be error_rate or latency"),
                        );
                        None
                    }
                };
                let url = prom.url.get_ref();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    check.at(
                        &prom.url.span(),
                        format!("{key}.prometheus.url"),
                        "not an http(s) URL",
                    );
                }
                if let Some(measures) = measures {
                    probes.push(Probe::Prometheus {
                        name,
                        url: prom.url.into_inner(),
                        query: prom.query,
                        measures,
                        bearer_env: prom.bearer_env,
                    });
                }
            }
            _ => check.at(
                &p.name.span(),
                key,
                "a probe is either `http` or `prometheus`, exactly one",
            ),
        }
    }
    let mut matrix: Vec<SeverityRule> = Vec::new();
    for (i, r) in m.matrix.into_iter().enumerate() {
        let key = format!("monitoring.matrix[{i}]");
        let Some(severity) = Severity::parse(r.severity.get_ref()) else {
            check.at(
                &r.severity.span(),
                format!("{key}.severity"),
                "must be critical, high, medium or low",
            );
            continue;
        };
        if matrix.iter().any(|m| m.severity == severity) {
            check.at(
                &r.severity.span(),
                format!("{key}.severity"),
                "listed twice",
            );
        }
        if let Some(rate) = &r.error_rate_above {
            if !(0.0..=1.0).contains(rate.get_ref()) {
                check.at(
                    &rate.span(),
                    format!("{key}.error_rate_above"),
                    "a ratio between 0 and 1 (0.05 is 5%)",
                );
            }
        }
        let latency_above = r
            .latency_above
            .as_ref()
            .and_then(|d| check.duration(d, &format!("{key}.latency_above")));
        matrix.push(SeverityRule {
            severity,
            error_rate_above: r.error_rate_above.map(|r| r.into_inner()),
            latency_above,
            action: r.action,
        });
    }
    (check.errors.len() == before).then_some(Monitoring {
        schedule,
        probes,
        matrix,
    })
}
