//! The text commands people type — `/deploy start payments-api v2.4.0`,
//! `/oncall override bruno 2h` — as a closed enum, parsed in one place
//! without I/O. The help text is generated from the same table, so it cannot
//! drift from the parser.

use crate::domain::runbook::Severity;
use crate::domain::Dur;

/// A parsed `/deploy` or `/oncall` command. Run numbers are per deployments channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Start {
        service: String,
        version: String,
        runbook: Option<String>,
        env: Option<String>,
    },
    Status {
        run: Option<i64>,
    },
    List,
    Abort {
        run: i64,
        reason: String,
    },
    Rollback {
        run: Option<i64>,
        reason: String,
    },
    Report {
        run: Option<i64>,
    },
    /// Open an incident, linked to run `run` (default: the latest open one).
    Incident {
        summary: String,
        severity: Severity,
        run: Option<i64>,
    },
    Help,
    /// `/oncall`: who holds each rotation, and each policy's steps.
    Oncall,
    /// `/oncall override <person> <duration> [rotation]`. The person is a
    /// key from the bot file or a platform mention, resolved by the engine.
    Override {
        person: String,
        duration: Dur,
        rotation: Option<String>,
    },
}

/// A slash command tminus answers, the same on every platform.
pub struct Slash {
    /// Without the slash: `deploy`.
    pub name: &'static str,
    pub description: &'static str,
    /// What to type after the name, as a platform shows it while typing.
    pub hint: &'static str,
}

/// Every slash command: what the Slack manifest declares, what Discord
/// registers and what the adapters accept.
pub const SLASH_COMMANDS: [Slash; 2] = [
    Slash {
        name: "deploy",
        description: "Run a deployment runbook in this channel",
        hint: "start <service> <version> [--runbook NAME] | status [N] | list | help",
    },
    Slash {
        name: "oncall",
        description: "Who is on call, and on-call overrides",
        hint: "[override <person> <duration> [rotation]]",
    },
];

/// One line of help per subcommand; the parser below accepts exactly these.
pub const USAGE: &[(&str, &str)] = &[
    (
        "start <service> <version> [--runbook NAME] [--env NAME]",
        "start a deployment: a root message, a thread and the first phase",
    ),
    (
        "status [N]",
        "show the current phase of deployment N (default: the latest)",
    ),
    ("list", "list the recent deployments in this channel"),
    ("abort <N> <reason>", "abort deployment N"),
    (
        "rollback [N] <reason>",
        "roll deployment N back (default: the one open deployment in production)",
    ),
    (
        "report [N]",
        "the deployment log of N as Markdown (default: the latest)",
    ),
    (
        "incident <summary> [--severity critical|high|medium] [--run N]",
        "open an incident and page the runbook's escalation policy (default severity high)",
    ),
    ("help", "this help"),
];

/// The `/oncall` commands, in the same form.
pub const ONCALL_USAGE: &[(&str, &str)] = &[
    (
        "",
        "who is on call now for each rotation, until when, and each escalation policy's steps",
    ),
    (
        "override <person> <duration> [rotation]",
        "let someone hold a rotation from now for a while (default: the one you hold)",
    ),
];

/// The help text for `/deploy help`.
pub fn help() -> String {
    let mut out = String::from("tminus runs your deployment runbook in this channel.\n");
    for (usage, what) in USAGE {
        out.push_str(&format!("  /deploy {usage}\n      {what}\n"));
    }
    for (usage, what) in ONCALL_USAGE {
        let usage = if usage.is_empty() {
            "/oncall".to_string()
        } else {
            format!("/oncall {usage}")
        };
        out.push_str(&format!("  {usage}\n      {what}\n"));
    }
    out.push_str("Buttons on each phase card mark items done, sign off, and advance.");
    out
}

/// Why a command did not parse; the message is for the person who typed it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}\nusage: {usage}")]
pub struct UsageError {
    pub message: String,
    pub usage: String,
}

/// The longest service, version, environment or runbook name.
pub const MAX_NAME: usize = 80;
/// The longest reason (abort, roll back, reject, not applicable, resolve).
pub const MAX_REASON: usize = 500;
/// The longest incident summary.
pub const MAX_SUMMARY: usize = 300;

/// Characters that change how the text around them is shown without being
/// seen: Unicode's bidirectional controls (U+202E turns `v1.2` into what
/// looks like another version) and zero-width marks.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
}

/// Why a name (service, version, `--env`, `--runbook`) is refused, if it is:
/// longer than [`MAX_NAME`], or holding a control or invisible character.
pub fn name_problem(what: &str, name: &str) -> Option<String> {
    if name.chars().count() > MAX_NAME {
        return Some(format!(
            "the {what} name is longer than {MAX_NAME} characters"
        ));
    }
    if name.chars().any(|c| c.is_control() || invisible(c)) {
        return Some(format!(
            "the {what} name holds a control or invisible character"
        ));
    }
    None
}

/// Why typed text (a reason, a summary) is refused, if it is: longer than
/// `max`, or holding a control character other than a line break or tab,
/// or an invisible one.
pub fn text_problem(what: &str, text: &str, max: usize) -> Option<String> {
    if text.chars().count() > max {
        return Some(format!("keep the {what} under {max} characters"));
    }
    if text
        .chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t' && c != '\r') || invisible(c))
    {
        return Some(format!("the {what} holds a control or invisible character"));
    }
    None
}

/// The longest override `/oncall override` accepts.
pub const MAX_OVERRIDE: Dur = Dur::from_const_secs(90 * 24 * 3600);

fn usage_of(name: &str) -> String {
    let usage = USAGE
        .iter()
        .find(|(u, _)| u.split_whitespace().next() == Some(name))
        .map_or("help", |(u, _)| *u);
    format!("/deploy {usage}")
}

fn fail(sub: &str, message: impl Into<String>) -> UsageError {
    UsageError {
        message: message.into(),
        usage: usage_of(sub),
    }
}

/// A run number: `42` or `#42`.
fn run_number(word: &str) -> Option<i64> {
    word.strip_prefix('#')
        .unwrap_or(word)
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
}

/// Whether a word is written as a number (`0`, `-1`, `#99999999999999999999`)
/// even if it is no run number: such a word is a mistyped number, never the
/// start of a reason.
fn numeric(word: &str) -> bool {
    let digits = word.strip_prefix('#').unwrap_or(word);
    let digits = digits.strip_prefix(['-', '+']).unwrap_or(digits);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A reason typed after a command, checked.
fn reason_of(sub: &str, words: &[&str], missing: &str) -> Result<String, UsageError> {
    let reason = words.join(" ");
    if reason.is_empty() {
        return Err(fail(sub, missing));
    }
    match text_problem("reason", &reason, MAX_REASON) {
        Some(problem) => Err(fail(sub, problem)),
        None => Ok(reason),
    }
}

/// Parse the text after `/deploy` (a leading `/deploy` is accepted too).
pub fn parse(text: &str) -> Result<Command, UsageError> {
    let text = text.trim();
    let text = text.strip_prefix("/deploy").unwrap_or(text).trim();
    let mut words = text.split_whitespace();
    let sub = words.next().unwrap_or("help");
    let rest: Vec<&str> = words.collect();
    match sub {
        "start" => parse_start(&rest),
        "status" => match rest.as_slice() {
            [] => Ok(Command::Status { run: None }),
            [n] => run_number(n)
                .map(|n| Command::Status { run: Some(n) })
                .ok_or_else(|| fail(sub, format!("`{n}` is not a deployment number"))),
            _ => Err(fail(sub, "too many words")),
        },
        "list" if rest.is_empty() => Ok(Command::List),
        "list" => Err(fail(sub, "list takes no arguments")),
        "report" => match rest.as_slice() {
            [] => Ok(Command::Report { run: None }),
            [n] => run_number(n)
                .map(|n| Command::Report { run: Some(n) })
                .ok_or_else(|| fail(sub, format!("`{n}` is not a deployment number"))),
            _ => Err(fail(sub, "too many words")),
        },
        "abort" => {
            let Some(first) = rest.first() else {
                return Err(fail(sub, "say which deployment and why"));
            };
            let run = run_number(first)
                .ok_or_else(|| fail(sub, format!("`{first}` is not a deployment number")))?;
            let reason = reason_of(sub, &rest[1..], "aborting needs a reason")?;
            Ok(Command::Abort { run, reason })
        }
        "rollback" => {
            let (run, reason_words) = match rest.first() {
                Some(w) if numeric(w) => match run_number(w) {
                    Some(n) => (Some(n), &rest[1..]),
                    None => {
                        return Err(fail(
                            sub,
                            format!("`{w}` is not a deployment number (they start at #1)"),
                        ))
                    }
                },
                _ => (None, &rest[..]),
            };
            let reason = reason_of(sub, reason_words, "a rollback needs a reason")?;
            Ok(Command::Rollback { run, reason })
        }
        "incident" => parse_incident(&rest),
        "help" => Ok(Command::Help),
        other => Err(fail(
            "help",
            format!("unknown command `{other}`; try /deploy help"),
        )),
    }
}

/// Parse a slash command by its name (`deploy` or `oncall`, with or without
/// the slash) and the text after it, as the platforms deliver them.
pub fn parse_slash(name: &str, text: &str) -> Result<Command, UsageError> {
    match name.trim_start_matches('/') {
        "oncall" => parse_oncall(text),
        _ => parse(text),
    }
}

/// Parse the text after `/oncall` (a leading `/oncall` is accepted too).
pub fn parse_oncall(text: &str) -> Result<Command, UsageError> {
    let text = text.trim();
    let text = text.strip_prefix("/oncall").unwrap_or(text).trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let usage = || format!("/oncall {}", ONCALL_USAGE[1].0);
    match words.as_slice() {
        [] | ["show"] => Ok(Command::Oncall),
        ["override", rest @ ..] => {
            let (person, duration, rotation) = match rest {
                [p, d] => (p, d, None),
                [p, d, r] => (p, d, Some(r.to_string())),
                [] | [_] => {
                    return Err(UsageError {
                        message: "say who takes over and for how long".into(),
                        usage: usage(),
                    })
                }
                _ => {
                    return Err(UsageError {
                        message: "too many words".into(),
                        usage: usage(),
                    })
                }
            };
            let duration = match duration.parse::<Dur>() {
                Ok(d) if d > MAX_OVERRIDE => {
                    return Err(UsageError {
                        message: format!("an override lasts {MAX_OVERRIDE} at the most"),
                        usage: usage(),
                    })
                }
                Ok(d) if d > Dur::ZERO => d,
                Ok(_) => {
                    return Err(UsageError {
                        message: "an override must last some time".into(),
                        usage: usage(),
                    })
                }
                Err(e) => {
                    return Err(UsageError {
                        message: e.to_string(),
                        usage: usage(),
                    })
                }
            };
            Ok(Command::Override {
                person: person.to_string(),
                duration,
                rotation,
            })
        }
        [other, ..] => Err(UsageError {
            message: format!("unknown command `{other}`"),
            usage: "/oncall, or /oncall override <person> <duration> [rotation]".into(),
        }),
    }
}

fn parse_incident(words: &[&str]) -> Result<Command, UsageError> {
    let mut summary = Vec::new();
    let mut severity = Severity::High;
    let mut run = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (w, None),
        };
        if !flag.starts_with("--") {
            summary.push(w);
            i += 1;
            continue;
        }
        let value = match inline {
            Some(v) => Some(v),
            None => {
                i += 1;
                words.get(i).map(|v| v.to_string())
            }
        };
        let value = value
            .filter(|v| !v.is_empty() && !v.starts_with("--"))
            .ok_or_else(|| fail("incident", format!("`{flag}` needs a value")))?;
        match flag {
            "--severity" => {
                severity = match Severity::parse(&value) {
                    Some(s) if s >= Severity::Medium => s,
                    _ => {
                        return Err(fail(
                            "incident",
                            format!("`{value}` is not a severity: critical, high or medium"),
                        ))
                    }
                }
            }
            "--run" => {
                run = Some(run_number(&value).ok_or_else(|| {
                    fail("incident", format!("`{value}` is not a deployment number"))
                })?)
            }
            f => return Err(fail("incident", format!("unknown option `{f}`"))),
        }
        i += 1;
    }
    let summary = summary.join(" ");
    if summary.is_empty() {
        return Err(fail("incident", "say what is wrong"));
    }
    if let Some(problem) = text_problem("summary", &summary, MAX_SUMMARY) {
        return Err(fail("incident", problem));
    }
    Ok(Command::Incident {
        summary,
        severity,
        run,
    })
}

fn parse_start(words: &[&str]) -> Result<Command, UsageError> {
    let mut positional = Vec::new();
    let mut runbook = None;
    let mut env = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (w, None),
        };
        let slot = match flag {
            "--runbook" => &mut runbook,
            "--env" => &mut env,
            f if f.starts_with("--") => return Err(fail("start", format!("unknown option `{f}`"))),
            _ => {
                positional.push(w);
                i += 1;
                continue;
            }
        };
        let value = match inline {
            Some(v) => v.to_string(),
            None => {
                i += 1;
                words
                    .get(i)
                    .ok_or_else(|| fail("start", format!("`{flag}` needs a value")))?
                    .to_string()
            }
        };
        if value.is_empty() || value.starts_with("--") {
            return Err(fail("start", format!("`{flag}` needs a value")));
        }
        *slot = Some(value);
        i += 1;
    }
    match positional.as_slice() {
        [service, version] => {
            let names = [
                ("service", Some(*service)),
                ("version", Some(*version)),
                ("runbook", runbook.as_deref()),
                ("environment", env.as_deref()),
            ];
            for (what, name) in names {
                if let Some(problem) = name.and_then(|n| name_problem(what, n)) {
                    return Err(fail("start", problem));
                }
            }
            Ok(Command::Start {
                service: service.to_string(),
                version: version.to_string(),
                runbook,
                env,
            })
        }
        [] | [_] => Err(fail("start", "say which service and version")),
        _ => Err(fail("start", "too many words: service and version only")),
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
