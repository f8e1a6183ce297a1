//! Unit tests of the `/deploy` and `/oncall` parsers and the help text, with
//! plain strings.

use super::*;

fn start(service: &str, version: &str, runbook: Option<&str>, env: Option<&str>) -> Command {
    Command::Start {
        service: service.into(),
        version: version.into(),
        runbook: runbook.map(Into::into),
        env: env.map(Into::into),
    }
}

#[test]
fn parses_every_subcommand() {
    assert_eq!(
        parse("start payments-api v2.4.0"),
        Ok(start("payments-api", "v2.4.0", None, None))
    );
    assert_eq!(
        parse("/deploy start api 1.2 --runbook web-service --env=staging"),
        Ok(start("api", "1.2", Some("web-service"), Some("staging")))
    );
    assert_eq!(
        parse("start --env prod api 1.2"),
        Ok(start("api", "1.2", None, Some("prod")))
    );
    assert_eq!(parse("status"), Ok(Command::Status { run: None }));
    assert_eq!(parse("status #3"), Ok(Command::Status { run: Some(3) }));
    assert_eq!(parse("list"), Ok(Command::List));
    assert_eq!(
        parse("abort 2 wrong version"),
        Ok(Command::Abort {
            run: 2,
            reason: "wrong version".into()
        })
    );
    assert_eq!(
        parse("rollback errors up"),
        Ok(Command::Rollback {
            run: None,
            reason: "errors up".into()
        })
    );
    assert_eq!(
        parse("rollback #4 errors"),
        Ok(Command::Rollback {
            run: Some(4),
            reason: "errors".into()
        })
    );
    assert_eq!(parse("report 7"), Ok(Command::Report { run: Some(7) }));
    assert_eq!(parse("report"), Ok(Command::Report { run: None }));
    assert_eq!(parse("help"), Ok(Command::Help));
    assert_eq!(
        parse("incident checkout returns 500s --severity critical"),
        Ok(Command::Incident {
            summary: "checkout returns 500s".into(),
            severity: Severity::Critical,
            run: None
        })
    );
    assert_eq!(
        parse("incident --run #2 --severity=medium slow pages"),
        Ok(Command::Incident {
            summary: "slow pages".into(),
            severity: Severity::Medium,
            run: Some(2)
        })
    );
    assert_eq!(parse_slash("/oncall", ""), Ok(Command::Oncall));
    assert_eq!(parse_slash("oncall", "show"), Ok(Command::Oncall));
    assert_eq!(
        parse_slash("/oncall", "override bruno 2h primary"),
        Ok(Command::Override {
            person: "bruno".into(),
            duration: Dur::from_mins(120),
            rotation: Some("primary".into())
        })
    );
    assert_eq!(
        parse_oncall("/oncall override <@U0BRUNO> 30m"),
        Ok(Command::Override {
            person: "<@U0BRUNO>".into(),
            duration: Dur::from_mins(30),
            rotation: None
        })
    );
    assert_eq!(parse_slash("/deploy", "list"), Ok(Command::List));
    assert_eq!(parse(""), Ok(Command::Help));
    assert_eq!(parse("/deploy"), Ok(Command::Help));
}

#[test]
fn explains_what_is_wrong() {
    let cases = [
        ("start", "say which service and version"),
        ("start api", "say which service and version"),
        ("start api 1 2", "too many words"),
        ("start api 1 --runbook", "needs a value"),
        ("start api 1 --runbook --env x", "needs a value"),
        ("start api 1 --colour red", "unknown option"),
        ("abort", "say which deployment"),
        ("abort x reason", "not a deployment number"),
        ("abort 2", "needs a reason"),
        ("rollback", "needs a reason"),
        ("rollback 3", "needs a reason"),
        ("status x", "not a deployment number"),
        ("status 0", "not a deployment number"),
        ("list all", "no arguments"),
        ("launch", "unknown command"),
        ("incident", "say what is wrong"),
        ("incident down --severity low", "not a severity"),
        ("incident down --severity", "needs a value"),
        ("incident down --run x", "not a deployment number"),
        ("incident down --colour red", "unknown option"),
    ];
    for (input, expected) in cases {
        let err = parse(input).unwrap_err();
        assert!(err.to_string().contains(expected), "{input}: {err}");
        assert!(err.to_string().contains("usage: /deploy"), "{input}: {err}");
    }
    let long = format!("start {} 1", "a".repeat(81));
    assert!(parse(&long).unwrap_err().message.contains("longer than"));
    for (input, expected) in [
        ("override", "say who takes over"),
        ("override bruno", "say who takes over"),
        ("override bruno soon", "duration"),
        ("override bruno 0s", "must last"),
        ("override bruno 200000000d", "at the most"),
        ("override bruno 1h primary extra", "too many words"),
        ("swap", "unknown command"),
    ] {
        let err = parse_oncall(input).unwrap_err().to_string();
        assert!(err.contains(expected), "{input}: {err}");
        assert!(err.contains("usage: /oncall"), "{input}: {err}");
    }
}

/// The subcommand a parsed command came from. The match has no catch-all:
/// a new command does not compile here until it has a name to find in the help.
fn subcommand(cmd: &Command) -> &'static str {
    match cmd {
        Command::Start { .. } => "/deploy start",
        Command::Status { .. } => "/deploy status",
        Command::List => "/deploy list",
        Command::Abort { .. } => "/deploy abort",
        Command::Rollback { .. } => "/deploy rollback",
        Command::Report { .. } => "/deploy report",
        Command::Incident { .. } => "/deploy incident",
        Command::Help => "/deploy help",
        Command::Oncall => "/oncall",
        Command::Override { .. } => "/oncall override",
    }
}

#[test]
fn every_command_the_parser_accepts_is_in_the_help() {
    let text = help();
    for (slash, line) in [
        ("deploy", "start a b"),
        ("deploy", "status"),
        ("deploy", "list"),
        ("deploy", "abort 1 why"),
        ("deploy", "rollback why"),
        ("deploy", "report 2"),
        ("deploy", "incident down"),
        ("deploy", "help"),
        ("oncall", ""),
        ("oncall", "override chen 2h"),
    ] {
        let cmd = parse_slash(slash, line).unwrap_or_else(|e| panic!("{slash} {line}: {e}"));
        let name = subcommand(&cmd);
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(name)),
            "{name} is not in the help:\n{text}"
        );
    }
}

#[test]
fn a_word_written_as_a_number_is_never_part_of_a_reason() {
    for bad in ["0", "-1", "+0", "#0", "99999999999999999999", "#-3"] {
        for sub in ["rollback", "abort"] {
            let input = format!("{sub} {bad} typo");
            let err = parse(&input).unwrap_err();
            assert!(
                err.message.contains("is not a deployment number"),
                "{input}: {err}"
            );
        }
        for sub in ["status", "report"] {
            let input = format!("{sub} {bad}");
            assert!(parse(&input).is_err(), "{input}");
        }
    }
    // A reason that starts with a word is still a reason, and a real
    // number is still the run.
    assert_eq!(
        parse("rollback v2 broke checkout"),
        Ok(Command::Rollback {
            run: None,
            reason: "v2 broke checkout".into()
        })
    );
    assert_eq!(
        parse("rollback #7 errors"),
        Ok(Command::Rollback {
            run: Some(7),
            reason: "errors".into()
        })
    );
}

#[test]
fn each_field_has_a_limit_named_in_its_error_and_names_refuse_hidden_characters() {
    let long = |n: usize| "x".repeat(n);
    let cases = [
        (
            format!("start api 1 --env {}", long(81)),
            "environment name is longer than 80",
        ),
        (
            format!("start api 1 --runbook {}", long(81)),
            "runbook name is longer than 80",
        ),
        (
            format!("start {} 1", long(81)),
            "service name is longer than 80",
        ),
        (
            format!("start api {}", long(81)),
            "version name is longer than 80",
        ),
        (format!("abort 1 {}", long(501)), "reason under 500"),
        (format!("rollback {}", long(501)), "reason under 500"),
        (format!("incident {}", long(301)), "summary under 300"),
        (
            "start api v1\u{202E}2.1".to_string(),
            "control or invisible",
        ),
        ("start api\u{0} v1".to_string(), "control or invisible"),
        (
            "start api v1 --env prod\u{200B}".to_string(),
            "control or invisible",
        ),
        ("abort 1 oops\u{0}".to_string(), "control or invisible"),
        (
            "incident db \u{202E}down".to_string(),
            "control or invisible",
        ),
    ];
    for (input, expected) in cases {
        let err = parse(&input).unwrap_err();
        assert!(err.message.contains(expected), "{input:?}: {err}");
    }
    // At the limit is fine.
    assert!(parse(&format!("start api 1 --env {}", long(80))).is_ok());
    assert!(parse(&format!("abort 1 {}", long(500))).is_ok());
    // Typed reasons may span lines.
    assert_eq!(
        text_problem("reason", "line one\nline two", MAX_REASON),
        None
    );
}
