//! Loader tests on small hand-written configurations: what is accepted,
//! and that each problem names its file, line and key.

use super::*;

const BOT: &str = r#"[deploy]
default_runbook = "rb"

[people.alice]
name = "Alice"
slack = "U1"

[people.bob]
name = "Bob"
discord = "42"

[roles.qa]
name = "QA"
members = ["alice", "bob"]

[rotations.primary]
name = "Primary"
members = ["alice", "bob"]
handoff = "09:00"
timezone = "Europe/Berlin"
period = "weekly"

[policies.basic]
name = "Basic"
[[policies.basic.steps]]
after = "0s"
page = ["rotation:primary"]
[[policies.basic.steps]]
after = "5m"
page = ["role:qa", "person:bob"]
advice = "consider a rollback"
"#;

const RUNBOOK: &str = r#"name = "RB"
escalation = "basic"
signoff_reminder = "30m"

[[phases]]
id = "pre"
title = "Pre"
signoffs = [{ role = "qa", quorum = 2 }]
four_eyes = true
[[phases.items]]
id = "deploy"
text = "Deploy"
production_deploy = true

[monitoring]
schedule = [{ every = "5m", until = "1h" }]
"#;

fn write(bot: &str, runbooks: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(BOT_FILE), bot).unwrap();
    std::fs::create_dir(dir.path().join("runbooks")).unwrap();
    for (name, text) in runbooks {
        std::fs::write(
            dir.path().join("runbooks").join(format!("{name}.toml")),
            text,
        )
        .unwrap();
    }
    dir
}

fn errors(bot: &str, runbooks: &[(&str, &str)]) -> Vec<String> {
    let dir = write(bot, runbooks);
    match Config::load(dir.path()) {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.iter()
                .map(|e| {
                    let file = e.file.file_name().unwrap().to_string_lossy();
                    format!("{file}:{}: {}: {}", e.line, e.key, e.message)
                })
                .collect()
        }
    }
}

#[test]
fn a_small_configuration_loads_with_everything_resolved() {
    let dir = write(BOT, &[("rb", RUNBOOK)]);
    let config = Config::load(dir.path()).unwrap();
    assert_eq!(config.default_runbook, "rb");
    assert_eq!(config.directory.people.len(), 2);
    let rb = &config.runbooks["rb"];
    assert_eq!(rb.phases[0].gate.signoffs[0].quorum, 2);
    assert!(rb.phases[0].gate.four_eyes);
    assert_eq!(rb.signoff_reminder, Some(crate::domain::Dur::from_mins(30)));
    assert_eq!(config.policies["basic"].steps.len(), 2);
    assert_eq!(config.rotations["primary"].members.len(), 2);
    assert!(config
        .summary()
        .starts_with("2 people, 1 roles, 1 runbooks (rb)"));
}

#[test]
fn production_deploy_problems_point_at_the_items() {
    let runbook = RUNBOOK.replace(
        "production_deploy = true\n",
        "production_deploy = true\noptional = true\n[[phases.items]]\nid = \"again\"\ntext = \"Again\"\nproduction_deploy = true\n",
    );
    let errs = errors(BOT, &[("rb", &runbook)]);
    assert!(errs.contains(&"rb.toml:11: phases[0].items[0].optional: the production deploy item cannot be optional".to_string()), "{errs:#?}");
    assert!(errs.contains(&"rb.toml:16: phases[0].items[1].production_deploy: only one item may be marked production_deploy".to_string()), "{errs:#?}");
}

#[test]
fn a_broken_phase_does_not_hide_its_production_item_or_the_runbook() {
    let runbook = RUNBOOK.replace("role = \"qa\"", "role = \"nobody\"");
    let errs = errors(BOT, &[("rb", &runbook)]);
    // Only the real problem: no follow-on complaint about monitoring or the
    // default runbook, whose file exists.
    assert_eq!(
        errs,
        vec![
            "rb.toml:8: phases[0].signoffs[0].role: unknown role `nobody` (known: qa)".to_string()
        ]
    );
}

#[test]
fn a_rotation_with_a_bad_time_zone_is_the_only_complaint() {
    let bot = BOT.replace("Europe/Berlin", "Mars/Olympus");
    let errs = errors(&bot, &[("rb", RUNBOOK)]);
    assert_eq!(
        errs,
        vec!["tminus.toml:20: rotations.primary.timezone: `Mars/Olympus` is not an IANA time zone like Europe/Paris".to_string()]
    );
}

#[test]
fn bot_file_mistakes_are_each_reported() {
    let bot = BOT
        .replace(
            "page = [\"role:qa\", \"person:bob\"]",
            "page = [\"role:qa\", \"person:carol\", \"team:x\"]",
        )
        .replace("handoff = \"09:00\"", "handoff = \"9am\"")
        .replace("discord = \"42\"", "discord = \"42\"\nslack = \"U1\"");
    let errs = errors(&bot, &[("rb", RUNBOOK)]);
    let want = [
        "people.bob.slack: slack user `U1` is already given to `alice`",
        "rotations.primary.handoff: `9am` is not a time of day",
        "policies.basic.steps[1].page[1]: unknown person `carol`",
        "policies.basic.steps[1].page[2]: `team:x` must name whom to page",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.contains(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
}

#[test]
fn a_parse_error_names_the_line_and_the_key() {
    let runbook = RUNBOOK.replace("title = \"Pre\"", "title = \"Pre\"\ncolour = \"red\"");
    let errs = errors(BOT, &[("rb", &runbook)]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("rb.toml:8: phases.colour: unknown field `colour`"),
        "{errs:#?}"
    );
}

#[test]
fn durations_quorums_and_schedules_are_checked() {
    let runbook = RUNBOOK
        .replace("quorum = 2", "quorum = 3")
        .replace("signoff_reminder = \"30m\"", "signoff_reminder = \"0s\"")
        .replace(
            "{ every = \"5m\", until = \"1h\" }",
            "{ every = \"2h\", until = \"1h\" }",
        );
    let errs = errors(BOT, &[("rb", &runbook)]);
    for w in [
        "rb.toml:3: signoff_reminder: must be longer than zero",
        "rb.toml:8: phases[0].signoffs[0].quorum: quorum 3 is larger than role `qa`, which has 2 member(s)",
        "monitoring.schedule[0].every: longer than the stage itself",
    ] {
        assert!(errs.iter().any(|e| e.contains(w)), "missing {w:?} in {errs:#?}");
    }
}

#[test]
fn a_policy_that_would_page_without_pause_is_refused() {
    let bot = BOT
        .replace("after = \"5m\"", "after = \"0s\"")
        .replace("name = \"Basic\"", "name = \"Basic\"\nrepeat_from = 1");
    let errs = errors(&bot, &[("rb", RUNBOOK)]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "tminus.toml:25: policies.basic.repeat_from: the steps it starts over from never wait"
        ),
        "{errs:#?}"
    );
    // With a wait somewhere in the round it loads.
    let bot = BOT.replace("name = \"Basic\"", "name = \"Basic\"\nrepeat_from = 1");
    assert_eq!(errors(&bot, &[("rb", RUNBOOK)]), Vec::<String>::new());
}

#[test]
fn a_repeated_step_must_wait_between_its_pages() {
    let bot = BOT.replace(
        "after = \"0s\"\npage = [\"rotation:primary\"]",
        "after = \"0s\"\npage = [\"rotation:primary\"]\nrepeat = 2",
    );
    let errs = errors(&bot, &[("rb", RUNBOOK)]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("policies.basic.steps[0].repeat: a repeated step needs an `after`"),
        "{errs:#?}"
    );
}

#[test]
fn integrations_hooks_and_webhooks_are_checked() {
    let bot = format!(
        r#"{BOT}
[integrations.ci]
name = "alice"
token_env = "lower-case"
services = []
runbooks = ["nope"]

[hooks.go]
name = "CI"
url = "ftp://ci.example.com"
method = "GET"
body = {{ token = "{{{{secret}}}}" }}

[webhooks.sink]
url = "https://sink.example.com"
secret_env = "SINK_SECRET"
events = ["run.started", "run.exploded"]
"#
    );
    let runbook = RUNBOOK.replace(
        "text = \"Deploy\"",
        "text = \"Deploy\"\n  run = \"missing\"",
    );
    let got = errors(&bot, &[("rb", &runbook)]).join("\n");
    for expected in [
        "integrations.ci.name: `alice` is a person's key",
        "integrations.ci.token_env: `lower-case` is not an environment variable name",
        "integrations.ci.services: list the services",
        "hooks.go.url: `ftp://ci.example.com` is not an http or https URL",
        "hooks.go.method: a hook's method is POST, PUT or PATCH",
        "hooks.go.body: unknown placeholder {{secret}}",
        "webhooks.sink.events[1]: unknown event `run.exploded`",
        "roles: name the roles that may press \"Run\"",
    ] {
        assert!(got.contains(expected), "{expected:?} not in:\n{got}");
    }
}

#[test]
fn a_pipeline_item_loads_with_its_hook_roles_and_timeout() {
    let bot = format!(
        r#"{BOT}
[hooks.go]
name = "CI"
url = "https://ci.example.com/dispatch"
headers_env = {{ Authorization = "CI_AUTH" }}
body = {{ run = "{{{{run_id}}}}" }}
"#
    );
    let runbook = RUNBOOK.replace(
        "text = \"Deploy\"",
        "text = \"Deploy\"\n  run = \"go\"\n  roles = [\"qa\"]\n  timeout = \"15m\"",
    );
    let dir = write(&bot, &[("rb", &runbook)]);
    let config = Config::load(dir.path()).unwrap();
    let step = config.runbooks["rb"].phases[0].items[0]
        .pipeline
        .clone()
        .expect("a pipeline step");
    assert_eq!(step.hook, "go");
    assert_eq!(step.timeout, crate::domain::Dur::from_mins(15));
    assert_eq!(config.hooks["go"].headers_env["Authorization"], "CI_AUTH");
    assert_eq!(config.hooks["go"].method, "POST");
}

#[test]
fn references_to_runbooks_and_hooks_must_resolve() {
    let bot = format!(
        r#"{BOT}
[integrations.ci]
name = "CI"
token_env = "CI_TOKEN"
services = ["*"]
runbooks = ["nope"]
"#
    );
    let runbook = RUNBOOK.replace(
        "text = \"Deploy\"",
        "text = \"Deploy\"\n  run = \"missing\"\n  roles = [\"qa\"]",
    );
    let got = errors(&bot, &[("rb", &runbook)]).join("\n");
    for expected in [
        "integrations.ci.runbooks[0]: no runbook named `nope`",
        "phases[0].items[0].run: no hook `missing`",
    ] {
        assert!(got.contains(expected), "{expected:?} not in:\n{got}");
    }
}
