//! `tminus check-config` on the bundled configuration and on broken copies:
//! every problem listed with file, line and key, exit status 1.

use std::path::Path;

use crate::helpers::{bot_config, run_tminus};

fn check(dir: &Path) -> (i32, String, String) {
    let dir = dir.to_str().expect("a UTF-8 path");
    run_tminus(&["check-config", "--config", dir], &[], &[])
}

/// A copy of the bundled configuration to break.
/// The bundled configuration with one more runbook `name` of `text`:
/// check it, which must fail, and return the runbook's path and stderr.
fn check_broken_runbook(name: &str, text: &str) -> (String, String) {
    let dir = copy();
    let path = dir.path().join(format!("runbooks/{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 1, "{stderr}");
    (path.display().to_string(), stderr)
}

/// Every one of `expected` is in `stderr`.
fn assert_listed(stderr: &str, expected: &[String]) {
    for e in expected {
        assert!(stderr.contains(e.as_str()), "wanted {e} in:\n{stderr}");
    }
}

fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("runbooks")).unwrap();
    std::fs::copy(
        bot_config().join("tminus.toml"),
        dir.path().join("tminus.toml"),
    )
    .unwrap();
    for entry in std::fs::read_dir(bot_config().join("runbooks")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("runbooks").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    dir
}

/// The 1-based line of the first occurrence of `needle` in a file.
fn line_of(path: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn the_bundled_configuration_is_clean() {
    let (code, stdout, stderr) = check(&bot_config());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("ok:"), "{stdout}");
    let config = crate::helpers::config();
    assert!(
        stdout.contains(&format!("{} people", config.directory.people.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} roles", config.directory.roles.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} runbooks", config.runbooks.len())),
        "{stdout}"
    );
    // One runbook per seed playbook, plus the quickstart.
    assert!(config.runbooks.len() >= 6, "{:?}", config.runbooks.keys());
    assert!(config.runbooks.contains_key("quickstart"));
}

#[test]
fn an_unknown_key_in_a_runbook_is_named_with_file_and_line() {
    let dir = copy();
    let path = dir.path().join("runbooks/quickstart.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Misspell the first item's `text` key.
    let broken = text.replacen(" text = ", " txet = ", 1);
    assert_ne!(broken, text, "quickstart has an item with a text key");
    std::fs::write(&path, &broken).unwrap();
    let line = line_of(&path, "txet = ");

    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 1, "{stderr}");
    let expected = format!("{}:{line}:", path.display());
    assert!(
        stderr.contains(&expected),
        "wanted {expected} in:\n{stderr}"
    );
    assert!(stderr.contains("txet"), "{stderr}");
    assert!(stderr.contains("unknown field"), "{stderr}");
}

#[test]
fn an_unknown_person_in_a_role_is_named_with_file_line_and_key() {
    let dir = copy();
    let path = dir.path().join("tminus.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = crate::helpers::config();
    let (role_key, role) = config.directory.roles.iter().next().unwrap();
    let first = role.members[0].as_str();
    // Replace the role's member list with one that names a stranger.
    let header = format!("[roles.{role_key}]");
    let at = text.find(&header).expect("role table in the bot file");
    let members_at = at + text[at..].find("members").unwrap();
    let end = members_at + text[members_at..].find(']').unwrap() + 1;
    let broken = format!(
        "{}members = [\"{first}\", \"mallory\"]{}",
        &text[..members_at],
        &text[end..]
    );
    std::fs::write(&path, &broken).unwrap();
    let line = broken[..broken.find("\"mallory\"").unwrap()]
        .lines()
        .count();

    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 1, "{stderr}");
    let expected = format!(
        "{}:{line}: roles.{role_key}.members[1]: unknown person `mallory`",
        path.display()
    );
    assert!(
        stderr.contains(&expected),
        "wanted {expected} in:\n{stderr}"
    );
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let dir = copy();
    let path = dir.path().join("runbooks/broken.toml");
    std::fs::write(
        &path,
        r#"name = "Broken"
signoff_reminder = "soon"

[[phases]]
id = "one"
title = "One"
signoffs = [{ role = "no-such-role", quorum = 1 }]
[[phases.items]]
id = "a"
text = "A"
[[phases.items]]
id = "a"
text = "A again"

[[phases]]
id = "one"
title = "Same id"
[[phases.items]]
id = "b"
text = "B"

[[phases]]
id = "empty"
title = "Nothing in it"
"#,
    )
    .unwrap();
    let quick = dir.path().join("runbooks/quickstart.toml");
    let text = std::fs::read_to_string(&quick).unwrap();
    let broken = text.replacen("quorum = 1", "quorum = 99", 1);
    assert_ne!(broken, text, "quickstart has a quorum of 1 somewhere");
    std::fs::write(&quick, &broken).unwrap();

    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 1, "{stderr}");
    let file = path.display().to_string();
    assert_listed(
        &stderr,
        &[
            format!("{file}:2: signoff_reminder: `soon` is not a duration"),
            format!("{file}:7: phases[0].signoffs[0].role: unknown role `no-such-role`"),
            format!("{file}:12: phases[0].items[1].id: duplicate item id `a`"),
            format!("{file}:16: phases[1].id: duplicate phase id `one`"),
            format!("{file}:23: phases[2].items: phase `empty` is empty"),
            "quorum 99 is larger than role".to_string(),
        ],
    );
    assert!(stderr.contains("problem(s) in"), "{stderr}");
}

#[test]
fn unknown_keys_do_not_hide_the_other_problems_of_a_runbook() {
    let (file, stderr) = check_broken_runbook(
        "typos",
        r#"name = "Typos"
colour = "blue"

[[phases]]
id = "one"
title = "One"
signoffs = [{ role = "no-such-role", quorum = 1 }]
  [[phases.items]]
  id = "a"
  text = "A"
  optinal = true
"#,
    );
    assert_listed(
        &stderr,
        &[
            format!("{file}:2: colour: unknown field `colour`"),
            format!("{file}:11: phases.items.optinal: unknown field `optinal`"),
            format!("{file}:7: phases[0].signoffs[0].role: unknown role `no-such-role`"),
        ],
    );
}
