//! Pinned runbook versions and live reload: a runbook edited while a run is
//! live leaves that run on the version it started with; `reload` (the
//! shell) and SIGHUP (`serve`) put new files in force without a restart,
//! refuse broken files and changes that would strand a live run, and
//! `check-config --db` says what new files would mean for each live run.

use std::path::Path;
use std::time::Duration;

use tminus::config::Config;
use tminus::domain::RunStatus;
use tminus::store::Store;

use crate::fake_slack::{FakeSlack, BOT_TOKEN};
use crate::helpers::{
    all_dbs, config_with, shell_run, slack_command, ServeProcess, ShellSession, TestDb,
};
use crate::shell::{walk_phase, STARTER};

const SECRET: &str = "versions-signing-secret";

/// Rename quickstart's production phase and retitle it, as a post-mortem edit might.
fn edit_quickstart(dir: &Path) {
    let path = dir.join("runbooks/quickstart.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text
        .replacen("id = \"production\"", "id = \"prod2\"", 1)
        .replacen("title = \"Ship it\"", "title = \"Ship it now\"", 1);
    assert_ne!(text, edited, "the edit applies");
    std::fs::write(&path, edited).unwrap();
}

fn short(config: &Config, runbook: &str) -> String {
    config.runbooks[runbook].version.short().to_string()
}

async fn a_live_run_keeps_its_version(db: TestDb) {
    let dir = config_with("", &[]);
    let before = Config::load(dir.path()).unwrap();
    let old = before.runbooks["quickstart"].clone();
    let old_short = short(&before, "quickstart");

    let mut s = ShellSession::start_with(&db.url, STARTER, dir.path());
    let out = s.send("/deploy start hello v1 --runbook quickstart");
    assert!(out.contains("Started deployment #1"), "{out}");
    assert!(
        out.contains(&format!("runbook quickstart @ {old_short}")),
        "{out}"
    );
    walk_phase(&mut s, &before, &old, &old.phases[0], false);
    s.quit();

    // The file changes under the live run; a new process reads the new file.
    edit_quickstart(dir.path());
    let after = Config::load(dir.path()).unwrap();
    let new_short = short(&after, "quickstart");
    assert_ne!(old_short, new_short);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tminus"))
        .args(["check-config", "--config"])
        .arg(dir.path())
        .args(["--db", &db.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "#1 hello v1 (shell #deployments, phase production): runbook quickstart @ {old_short}: keeps its version; the file is now quickstart @ {new_short}"
        )),
        "{text}"
    );

    // The run list names run #1's phase as its own version does.
    {
        let serve = ServeProcess::start_with(
            dir.path(),
            &db.url,
            &[("TMINUS_WEB_TOKEN", "versions-web-token".to_string())],
        );
        let list = reqwest::Client::new()
            .get(serve.url("/runs"))
            .bearer_auth("versions-web-token")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(list.contains("<td>Ship it</td>"), "{list}");
        assert!(!list.contains("Ship it now"), "{list}");
    }

    let mut s = ShellSession::start_with(&db.url, STARTER, dir.path());
    let out = s.send("/deploy status 1");
    assert!(
        out.contains("Phase 2 of 3: Ship it\n") || out.contains("Phase 2 of 3: Ship it "),
        "{out}"
    );
    assert!(!out.contains("Ship it now"), "{out}");
    assert!(!out.contains("went wrong"), "{out}");
    // It walks to completion through the phases it started with.
    for phase in &old.phases[1..] {
        walk_phase(&mut s, &before, &old, phase, false);
    }
    assert!(
        s.transcript.contains("🎉 Deployment #1 completed."),
        "{}",
        s.transcript
    );
    let report = s.send("/deploy report 1");
    assert!(
        report.contains(&format!("(quickstart @ {old_short})")),
        "{report}"
    );
    // A new run follows the file as it is now.
    let out = s.send("/deploy start hello v2 --runbook quickstart");
    assert!(
        out.contains(&format!("runbook quickstart @ {new_short}")),
        "{out}"
    );
    let new = after.runbooks["quickstart"].clone();
    walk_phase(&mut s, &after, &new, &new.phases[0], false);
    assert!(s.transcript.contains("Ship it now"), "{}", s.transcript);
    s.quit();

    let store = Store::connect(&db.url).await.unwrap();
    let first = shell_run(&store, 1).await;
    let second = shell_run(&store, 2).await;
    assert_eq!(first.status, RunStatus::Completed);
    assert_eq!(second.phase, "prod2");
    assert_ne!(first.runbook_version, second.runbook_version);
    for (run, source) in [
        (&first, &old.version.source),
        (&second, &new.version.source),
    ] {
        let (name, version) = store
            .version(run.runbook_version.as_deref().unwrap())
            .await
            .unwrap()
            .expect("the version is stored");
        assert_eq!(name, "quickstart");
        assert_eq!(&version.source, source);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_runbook_leaves_a_live_run_on_its_version() {
    for db in all_dbs().await {
        a_live_run_keeps_its_version(db).await;
    }
}

/// A runbook that needs a role only the extra bot text defines.
const DBA_BOT: &str = r#"
[roles.dba]
name = "DBA"
members = ["bruno"]
"#;

const DBA_RUNBOOK: &str = r#"
name = "Schema change"
description = "A migration with a DBA's sign-off"

[[phases]]
id = "migrate"
title = "Migrate"
signoffs = [{ role = "dba", quorum = 1 }]

  [[phases.items]]
  id = "migration"
  text = "Run the migration"
"#;

async fn a_reload_that_would_strand_a_run_is_refused(db: TestDb) {
    let dir = config_with(DBA_BOT, &[("schema", DBA_RUNBOOK)]);
    let mut s = ShellSession::start_with(&db.url, STARTER, dir.path());
    let out = s.send("/deploy start billing v7 --runbook schema");
    assert!(out.contains("Started deployment #1"), "{out}");

    // The team drops the DBA role and the runbook's use of it: the files
    // alone are sound, but live run #1 still needs a DBA.
    let bot = std::fs::read_to_string(dir.path().join("tminus.toml")).unwrap();
    std::fs::write(dir.path().join("tminus.toml"), bot.replace(DBA_BOT, "")).unwrap();
    std::fs::write(
        dir.path().join("runbooks/schema.toml"),
        DBA_RUNBOOK.replace("signoffs = [{ role = \"dba\", quorum = 1 }]\n", ""),
    )
    .unwrap();
    assert!(Config::load(dir.path()).is_ok(), "the new files load");
    let out = s.send("reload");
    assert!(out.contains("Not reloaded"), "{out}");
    assert!(out.contains("would strand 1 live run"), "{out}");
    assert!(out.contains("deployment #1 (billing v7"), "{out}");
    assert!(out.contains("unknown role `dba`"), "{out}");
    // The configuration in force is unchanged: the DBA can still sign.
    s.as_person("bruno");
    let out = s.press("Sign off as DBA", None);
    assert!(out.contains("signed off"), "{out}");

    // With the run finished, the same files are accepted.
    s.as_person(STARTER);
    s.press("Done: ", None);
    s.press("Complete deployment", None);
    let out = s.send("reload");
    assert!(out.contains("Reloaded:"), "{out}");
    s.quit();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_file_change_that_strands_a_live_run_is_refused() {
    for db in all_dbs().await {
        a_reload_that_would_strand_a_run_is_refused(db).await;
    }
}

const HOTFIX_RUNBOOK: &str = r#"
name = "Hotfix"
description = "One phase, no gate"

[[phases]]
id = "ship"
title = "Ship the fix"

  [[phases.items]]
  id = "deploy"
  text = "Deploy the fix"
"#;

async fn serve_reloads_on_sighup(db: TestDb) {
    let dir = config_with("", &[]);
    let fake = FakeSlack::start().await;
    let log = dir.path().join("serve.log");
    let serve = ServeProcess::start_logged(
        dir.path(),
        &db.url,
        &[
            ("SLACK_BOT_TOKEN", BOT_TOKEN.to_string()),
            ("SLACK_SIGNING_SECRET", SECRET.to_string()),
            ("SLACK_API_URL", fake.api_url()),
            ("RUST_LOG", "warn".to_string()),
        ],
        &log,
    );
    let http = reqwest::Client::new();
    let answer = slack_command(
        &http,
        &serve,
        SECRET,
        "alice",
        "start api v1 --runbook hotfix",
    )
    .await;
    assert!(answer.contains("There is no runbook `hotfix`"), "{answer}");

    // A new runbook file and SIGHUP: it works at once, no restart.
    std::fs::write(dir.path().join("runbooks/hotfix.toml"), HOTFIX_RUNBOOK).unwrap();
    serve.hangup();
    let mut answer = String::new();
    for _ in 0..100 {
        answer = slack_command(
            &http,
            &serve,
            SECRET,
            "alice",
            "start api v1 --runbook hotfix",
        )
        .await;
        if answer.contains("Started deployment") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answer.contains("with runbook hotfix"), "{answer}");
    let metrics = http
        .get(serve.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tminus_config_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );

    // A broken file: the log names file, line and key; the old runbooks go on.
    std::fs::write(
        dir.path().join("runbooks/broken.toml"),
        "name = \"Broken\"\ndescription = \"x\"\n\n[[phases]]\nid = \"a\"\ntitle = \"A\"\nbogus_key = 1\n",
    )
    .unwrap();
    serve.hangup();
    let mut logged = String::new();
    for _ in 0..100 {
        logged = std::fs::read_to_string(&log).unwrap_or_default();
        if logged.contains("configuration not reloaded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logged.contains("runbooks/broken.toml:7: phases.bogus_key: unknown field"),
        "{logged}"
    );
    let answer = slack_command(
        &http,
        &serve,
        SECRET,
        "alice",
        "start api v2 --runbook hotfix",
    )
    .await;
    assert!(answer.contains("Started deployment"), "{answer}");
    let metrics = http
        .get(serve.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tminus_config_reloads_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tminus_config_last_reload_failure_timestamp_seconds 0\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reads_new_files_on_sighup_and_keeps_the_old_on_a_broken_one() {
    for db in all_dbs().await {
        serve_reloads_on_sighup(db).await;
    }
}

/// Make every run look as it did before versions: no version pinned.
async fn forget_versions(db: &TestDb) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE runs SET runbook_version = NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

async fn runs_from_before_versions(db: TestDb) {
    let dir = config_with(DBA_BOT, &[("schema", DBA_RUNBOOK)]);
    let mut s = ShellSession::start_with(&db.url, STARTER, dir.path());
    assert!(s
        .send("/deploy start hello v1 --runbook quickstart")
        .contains("#1"));
    s.press("Done: ", None);
    s.press("Done: ", None);
    s.press("N/A: ", Some("no flag"));
    let out = s.press("Advance to", None);
    assert!(out.contains("Ship it"), "{out}");
    assert!(s
        .send("/deploy start billing v7 --runbook schema")
        .contains("#2"));
    s.quit();
    forget_versions(&db).await;

    // Run #1's file loses its current phase; run #2's file is gone.
    edit_quickstart(dir.path());
    std::fs::remove_file(dir.path().join("runbooks/schema.toml")).unwrap();
    let after = Config::load(dir.path()).unwrap();

    let mut s = ShellSession::start_with(&db.url, STARTER, dir.path());
    let out = s.send("/deploy status 1");
    assert!(!out.contains("went wrong"), "{out}");
    assert!(
        out.contains(&format!(
            "Deployment #1 (hello v1) is live but cannot go on: it follows runbook quickstart @ {}, and its current phase `production` is not in that runbook",
            short(&after, "quickstart")
        )),
        "{out}"
    );
    assert!(out.contains("/deploy abort 1 REASON"), "{out}");
    let out = s.send("/deploy status 2");
    assert!(
        out.contains("it follows runbook schema, and its runbook file was gone"),
        "{out}"
    );
    // Someone else may not abort; the starter may, on both.
    s.as_person("zoe");
    let out = s.send("/deploy abort 2 not yours");
    assert!(!out.contains("aborted"), "{out}");
    s.as_person(STARTER);
    for n in [1, 2] {
        let out = s.send(&format!("/deploy abort {n} the runbook moved on"));
        assert!(!out.contains("went wrong"), "{out}");
        assert!(
            s.transcript
                .contains(&format!("aborted deployment #{n}: the runbook moved on")),
            "{}",
            s.transcript
        );
    }
    s.quit();
    let store = Store::connect(&db.url).await.unwrap();
    for n in [1, 2] {
        assert_eq!(shell_run(&store, n).await.status, RunStatus::Aborted);
    }
    // Run #1 was pinned at start-up to its file as it then was; run #2 could not be.
    assert_eq!(
        shell_run(&store, 1).await.runbook_version.as_deref(),
        Some(after.runbooks["quickstart"].version.hash.as_str())
    );
    assert_eq!(shell_run(&store, 2).await.runbook_version, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_from_before_versions_are_pinned_or_shown_as_stranded_and_can_be_aborted() {
    for db in all_dbs().await {
        runs_from_before_versions(db).await;
    }
}
