//! `tminus doctor` against the fake platforms: all green on a correct
//! set-up, and for each thing people get wrong — a bad token, a missing
//! scope or permission, the bot not in a channel, an unknown channel or
//! person id, a missing signing secret or public key, unregistered
//! commands, a database from a newer build — a failure with its exact fix,
//! and exit status 1. And `serve` naming the first problem at start.

use std::path::Path;

use crate::fake_discord::{self, Channel, FakeDiscord};
use crate::fake_slack::{self, FakeSlack};
use crate::fakes::discord_public_key;
use crate::helpers::{
    bot_config, config_with, poll_until, postgres_db, run_tminus, sqlite_db, ServeProcess,
};

/// Run `tminus doctor` with only `env` set: its exit status and output.
fn doctor(config: &Path, db: &str, env: &[(&str, String)]) -> (i32, String) {
    let config = config.to_str().expect("a UTF-8 path");
    let unset = [
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "DISCORD_TOKEN",
        "DISCORD_PUBLIC_KEY",
        "DISCORD_APPLICATION_ID",
        "DATABASE_URL",
    ];
    let (code, stdout, stderr) =
        run_tminus(&["doctor", "--config", config, "--db", db], &unset, env);
    (code, format!("{stdout}{stderr}"))
}

fn slack_env(fake: &FakeSlack) -> Vec<(&'static str, String)> {
    vec![
        ("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN.to_string()),
        ("SLACK_SIGNING_SECRET", "doctor-secret".to_string()),
        ("SLACK_API_URL", fake.api_url()),
    ]
}

fn discord_env(fake: &FakeDiscord) -> Vec<(&'static str, String)> {
    vec![
        ("DISCORD_TOKEN", fake_discord::TOKEN.to_string()),
        ("DISCORD_PUBLIC_KEY", discord_public_key()),
        ("DISCORD_APPLICATION_ID", fake_discord::APP_ID.to_string()),
        ("DISCORD_API_URL", fake.api_url()),
    ]
}

/// The failure line saying `what`, and the fix right under it.
fn failure<'a>(out: &'a str, what: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = out.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.trim_start().starts_with('✗') && l.contains(what))
        .unwrap_or_else(|| panic!("no failure saying {what:?} in:\n{out}"));
    let fix = lines
        .get(i + 1)
        .and_then(|l| l.trim_start().strip_prefix("fix: "))
        .unwrap_or_else(|| panic!("no fix under {:?} in:\n{out}", lines[i]));
    (lines[i], fix)
}

/// Exactly one check failed: the one saying `what`, fixed by `fix`.
fn only_failure(code: i32, out: &str, what: &str, fix: &str) {
    assert_eq!(code, 1, "{out}");
    let (_, shown) = failure(out, what);
    assert!(
        shown.contains(fix),
        "wanted the fix {fix:?}, got {shown:?}\n{out}"
    );
    let failed = out
        .lines()
        .filter(|l| l.trim_start().starts_with('✗'))
        .count();
    assert_eq!(failed, 1, "one failure expected:\n{out}");
    assert!(out.contains("1 of "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_passes_when_set_up_and_names_the_fix_for_each_mistake() {
    let db = sqlite_db();
    let config = bot_config();

    let fake = FakeSlack::start().await;
    let (code, out) = doctor(&config, &db.url, &slack_env(&fake));
    assert_eq!(code, 0, "{out}");
    for line in [
        "✓ the bot token works: @tminus in Acme",
        "✓ the token has all 10 scopes tminus needs",
        "✓ SLACK_SIGNING_SECRET is set",
        "✓ the deployments channel #ch-c0deploys exists and the bot is in it",
        "✓ the incidents channel #ch-c0incident exists and the bot is in it",
        "✓ all 8 people with a Slack id exist in Slack",
        "does not exist yet; `tminus serve` creates it at first start",
    ] {
        assert!(out.contains(line), "wanted {line:?} in:\n{out}");
    }
    assert!(out.ends_with("checks passed\n"), "{out}");
    assert!(
        fake.calls().is_empty(),
        "doctor posts nothing: {:?}",
        fake.calls()
    );
    assert!(fake.setup_calls().len() >= 11, "{:?}", fake.setup_calls());
    assert!(
        !out.contains(fake_slack::BOT_TOKEN),
        "no token in the output"
    );

    // A wrong token: nothing else can be checked.
    let fake = FakeSlack::start().await;
    fake.expect_violations();
    let mut env = slack_env(&fake);
    env[0].1 = "xoxb-revoked-or-mistyped".into();
    let (code, out) = doctor(&config, &db.url, &env);
    only_failure(
        code,
        &out,
        "Slack does not accept SLACK_BOT_TOKEN (invalid_auth)",
        "copy the Bot User OAuth Token (xoxb-…) from OAuth & Permissions",
    );

    // A scope left out at install.
    let (code, out) = slack_doctor(|f| f.withhold_scope("channels:history")).await;
    only_failure(
        code,
        &out,
        "the token lacks channels:history",
        "add channels:history under OAuth & Permissions → Bot Token Scopes",
    );
    assert!(out.contains("Reinstall to Workspace"), "{out}");

    // The bot never invited to the deployments channel.
    let (code, out) =
        slack_doctor(|f| f.set_channel("C0DEPLOYS", fake_slack::Channel::WithoutTheBot)).await;
    only_failure(
        code,
        &out,
        "the bot is not in the deployments channel #ch-c0deploys (C0DEPLOYS)",
        "type /invite @tminus in #ch-c0deploys",
    );

    // A channel id that is no channel.
    let (code, out) =
        slack_doctor(|f| f.set_channel("C0INCIDENT", fake_slack::Channel::Missing)).await;
    only_failure(
        code,
        &out,
        "the incidents channel C0INCIDENT is not found",
        "put the channel's id in [channels.slack] incidents",
    );

    // A person whose member id is wrong.
    let (code, out) = slack_doctor(|f| f.forget_user("U0BRUNO")).await;
    only_failure(
        code,
        &out,
        "Bruno Ferreira ([people.bruno] slack = U0BRUNO): no such Slack user",
        "Copy member ID, and put it (U…) in [people.bruno] slack",
    );

    // A bot token and no way in: Slack stays off.
    let fake = FakeSlack::start().await;
    let env = vec![slack_env(&fake).remove(0)];
    let (code, out) = doctor(&config, &db.url, &env);
    only_failure(
        code,
        &out,
        "SLACK_BOT_TOKEN is set, but slack stays off",
        "set SLACK_SIGNING_SECRET (for the HTTP endpoints) or SLACK_APP_TOKEN (for Socket Mode)",
    );
    assert!(
        fake.calls().is_empty() && fake.setup_calls().is_empty(),
        "Slack is off: nothing to call"
    );
}

/// `doctor` against a new fake Slack set up by `prepare`, with `serve`'s
/// environment for it.
async fn slack_doctor(prepare: impl FnOnce(&FakeSlack)) -> (i32, String) {
    let db = sqlite_db();
    let fake = FakeSlack::start().await;
    prepare(&fake);
    doctor(&bot_config(), &db.url, &slack_env(&fake))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_socket_mode_checks_the_app_token() {
    let db = sqlite_db();
    let fake = FakeSlack::start().await;
    fake.set_ws_url("ws://127.0.0.1:9/socket".into());
    let mut env = slack_env(&fake);
    env[1] = ("SLACK_APP_TOKEN", fake_slack::APP_TOKEN.to_string());
    let (code, out) = doctor(&bot_config(), &db.url, &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("slack (Socket Mode)"), "{out}");
    assert!(
        out.contains("✓ SLACK_APP_TOKEN opens a Socket Mode connection"),
        "{out}"
    );

    let fake = FakeSlack::start().await;
    fake.expect_violations();
    let mut env = slack_env(&fake);
    env[1] = ("SLACK_APP_TOKEN", "xapp-wrong".to_string());
    let (code, out) = doctor(&bot_config(), &db.url, &env);
    only_failure(
        code,
        &out,
        "Slack refused SLACK_APP_TOKEN (invalid_auth)",
        "create an app-level token with the connections:write scope",
    );
}

/// Register the commands as `serve` does at start.
async fn register_commands(fake: &FakeDiscord) {
    register(fake, &tminus::discord::commands::definitions()).await;
}

/// Register `commands` globally, as a bot would.
async fn register(fake: &FakeDiscord, commands: &serde_json::Value) {
    let answer = reqwest::Client::new()
        .put(format!(
            "{}/applications/{}/commands",
            fake.api_url(),
            fake_discord::APP_ID
        ))
        .header("authorization", format!("Bot {}", fake_discord::TOKEN))
        .json(commands)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_passes_when_set_up_and_names_the_fix_for_each_mistake() {
    let db = sqlite_db();
    let config = bot_config();

    let fake = FakeDiscord::start().await;
    register_commands(&fake).await;
    let (code, out) = doctor(&config, &db.url, &discord_env(&fake));
    assert_eq!(code, 0, "{out}");
    for line in [
        "discord (interactions endpoint)",
        "✓ the bot token works: tminus (1100000000000000001)",
        "✓ DISCORD_APPLICATION_ID is the token's application",
        "✓ DISCORD_PUBLIC_KEY matches; Discord sends interactions to https://tminus.example.com/discord/interactions",
        "✓ the deployments channel #ch-4410 exists and the bot may post and open threads there",
        "✓ the incidents channel #ch-4411 exists",
        "✓ all 8 people with a Discord id are in Discord and in the server",
        "✓ /deploy and /oncall are registered globally",
    ] {
        assert!(out.contains(line), "wanted {line:?} in:\n{out}");
    }
    let calls = fake.calls();
    assert!(
        calls.len() == 1 && calls[0].method == "PUT",
        "doctor only reads: {calls:?}"
    );
    assert!(fake.setup_calls().iter().all(|c| c.method == "GET"));
    assert!(!out.contains(fake_discord::TOKEN), "no token in the output");

    let fake = FakeDiscord::start().await;
    let mut env = discord_env(&fake);
    env[0].1 = "not-the-token".into();
    let (code, out) = doctor(&config, &db.url, &env);
    fake.take_violations();
    only_failure(
        code,
        &out,
        "Discord does not accept DISCORD_TOKEN (401)",
        "reset the bot's token under Bot",
    );

    // The endpoint is configured at Discord but the key is not set here.
    let (code, out) = discord_doctor(|_| {}, &["DISCORD_PUBLIC_KEY"]).await;
    only_failure(
        code,
        &out,
        "Discord sends interactions to https://tminus.example.com/discord/interactions, but DISCORD_PUBLIC_KEY is not set",
        &format!("set DISCORD_PUBLIC_KEY={}", discord_public_key()),
    );

    // A public key of another application.
    let other = "ab".repeat(32);
    let endpoint = "https://tminus.example.com/discord/interactions";
    let (code, out) = discord_doctor(|f| f.set_application(&other, Some(endpoint)), &[]).await;
    only_failure(
        code,
        &out,
        "DISCORD_PUBLIC_KEY is not the application's public key",
        &format!("set DISCORD_PUBLIC_KEY={other}"),
    );

    // An unknown channel, a channel the bot cannot see, one where it may
    // not embed: each with its fix.
    let deployments = "1187340526198374410";
    let (code, out) = discord_doctor(|f| f.set_channel(deployments, Channel::Missing), &[]).await;
    only_failure(
        code,
        &out,
        "the deployments channel 1187340526198374410 does not exist",
        "put the right id in [channels.discord] deployments (Developer Mode on, right-click the channel → Copy Channel ID)",
    );

    let incidents = "1187340526198374411";
    let (code, out) = discord_doctor(|f| f.set_channel(incidents, Channel::Hidden), &[]).await;
    only_failure(
        code,
        &out,
        "the bot cannot see the incidents channel 1187340526198374411",
        "https://discord.com/oauth2/authorize?client_id=1100000000000000000&scope=bot%20applications.commands&permissions=",
    );

    let embed_links = 1 << 14;
    let (code, out) = discord_doctor(
        |f| f.set_channel(deployments, Channel::Denied(embed_links)),
        &[],
    )
    .await;
    only_failure(
        code,
        &out,
        "in #ch-4410 the bot lacks Embed Links",
        "grant Embed Links to the bot's role",
    );

    // The bot's role was made without Create Public Threads: both
    // channels say so.
    let view_send_embed_threads = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 38);
    let (code, out) =
        discord_doctor(|f| f.set_bot_role_permissions(view_send_embed_threads), &[]).await;
    assert_eq!(code, 1, "{out}");
    for channel in ["#ch-4410", "#ch-4411"] {
        let (_, fix) = failure(
            &out,
            &format!("in {channel} the bot lacks Create Public Threads"),
        );
        assert!(fix.contains("grant Create Public Threads"), "{fix}");
    }

    // The bot was never added to the server: it sees none of its channels.
    let (code, out) = discord_doctor(FakeDiscord::remove_bot_from_guild, &[]).await;
    assert_eq!(code, 1, "{out}");
    let (_, fix) = failure(&out, "the bot cannot see the deployments channel");
    assert!(fix.contains("tminus discord-invite"), "{fix}");

    // A person's id that is not in the server (so cannot be sent a page).
    let (code, out) = discord_doctor(|f| f.forget_user("297305816240917352"), &[]).await;
    only_failure(
        code,
        &out,
        "Bruno Ferreira ([people.bruno] discord = 297305816240917352) is not a member of the channels' server",
        "invite Bruno Ferreira to the server, or with Developer Mode on, right-click Bruno Ferreira → Copy User ID, and put it in [people.bruno] discord",
    );

    // With the channels unknown, a person is looked up as a user.
    let (code, out) = discord_doctor(
        |f| {
            f.set_channel(deployments, Channel::Hidden);
            f.set_channel(incidents, Channel::Hidden);
            f.forget_user("297305816240917352");
        },
        &[],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    failure(
        &out,
        "Bruno Ferreira ([people.bruno] discord = 297305816240917352): no such Discord user",
    );

    // Commands registered by an older tminus, without a subcommand.
    let fake = FakeDiscord::start().await;
    let mut old = tminus::discord::commands::definitions();
    old[0]["options"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["name"] != "incident");
    register(&fake, &old).await;
    let (code, out) = doctor(&config, &db.url, &discord_env(&fake));
    only_failure(
        code,
        &out,
        "the commands registered globally are an older set: /deploy lacks incident",
        "start `tminus serve` once",
    );

    // Commands never registered.
    let fake = FakeDiscord::start().await;
    let (code, out) = doctor(&config, &db.url, &discord_env(&fake));
    only_failure(
        code,
        &out,
        "/deploy and /oncall not registered globally",
        "start `tminus serve` once with DISCORD_APPLICATION_ID set",
    );

    // No application id: the fix names it.
    let (code, out) = discord_doctor(|_| {}, &["DISCORD_APPLICATION_ID"]).await;
    only_failure(
        code,
        &out,
        "DISCORD_APPLICATION_ID is not set",
        "set DISCORD_APPLICATION_ID=1100000000000000000",
    );
}

/// `doctor` against a new fake Discord, its commands registered and then
/// set up by `prepare`, with `serve`'s environment for it less `without`.
async fn discord_doctor(prepare: impl FnOnce(&FakeDiscord), without: &[&str]) -> (i32, String) {
    let db = sqlite_db();
    let fake = FakeDiscord::start().await;
    register_commands(&fake).await;
    prepare(&fake);
    let env: Vec<_> = discord_env(&fake)
        .into_iter()
        .filter(|(k, _)| !without.contains(k))
        .collect();
    doctor(&bot_config(), &db.url, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_the_database_and_no_platform_each_fail_with_a_fix() {
    // Nothing on: doctor says how to turn a platform on.
    let db = sqlite_db();
    let (code, out) = doctor(&bot_config(), &db.url, &[]);
    only_failure(
        code,
        &out,
        "neither Slack nor Discord is on",
        "set SLACK_BOT_TOKEN with SLACK_SIGNING_SECRET or SLACK_APP_TOKEN, or DISCORD_TOKEN",
    );

    // A broken bot file.
    let broken = config_with(
        "\n[roles.ops]\nname = \"Ops\"\nmembers = [\"nobody\"]\n",
        &[],
    );
    let fake = FakeSlack::start().await;
    let (code, out) = doctor(broken.path(), &db.url, &slack_env(&fake));
    assert_eq!(code, 1, "{out}");
    let (what, fix) = failure(&out, "has 1 problem(s)");
    assert!(what.contains("nobody"), "{what}");
    assert!(fix.contains("tminus check-config --config"), "{fix}");

    // A database migrated by a newer build, on both databases.
    let mut dbs = vec![sqlite_db()];
    dbs.extend(postgres_db().await);
    for db in dbs {
        let store = tminus::store::Store::connect(&db.url).await.unwrap();
        store.close().await;
        let fake = FakeSlack::start().await;
        let (code, out) = doctor(&bot_config(), &db.url, &slack_env(&fake));
        assert_eq!(code, 0, "{}: {out}", db.kind);
        let n = if db.kind == "sqlite" { 8 } else { 10 };
        assert!(
            out.contains(&format!("opens; all {n} migrations applied")),
            "{}: {out}",
            db.kind
        );

        use sqlx::Connection;
        let blob = if db.kind == "sqlite" {
            "X'00'"
        } else {
            "'\\x00'::bytea"
        };
        let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        let sql = format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'from the future', TRUE, {blob}, 1)"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let (code, out) = doctor(&bot_config(), &db.url, &slack_env(&fake));
        only_failure(
            code,
            &out,
            "has migrations this build does not know (0099): a newer tminus ran on it",
            "run the tminus version that migrated it (or newer)",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_says_what_it_is_doing_and_the_first_problem_of_each_platform() {
    let db = sqlite_db();
    let slack = FakeSlack::start().await;
    slack.set_channel("C0DEPLOYS", fake_slack::Channel::WithoutTheBot);
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut env = slack_env(&slack);
    env.extend(discord_env(&discord));
    env.push(("RUST_LOG", "info".into()));
    let _serve = ServeProcess::start_logged(&bot_config(), &db.url, &env, &log);
    let text = poll_until(
        "serve's start-up checks",
        || vec![std::fs::read_to_string(&log).unwrap_or_default()],
        |t| t[0].matches("set-up").count() >= 2,
        |t| t.clone(),
    )
    .await
    .remove(0);
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{text}"))
            .to_string()
    };
    let listening = line("tminus listening");
    assert!(
        listening.contains(&format!("database={}", db.url)),
        "{listening}"
    );
    assert!(listening.contains("live_runs=0"), "{listening}");
    assert!(line("platform=\"slack\"").contains("http=true"), "{text}");
    assert!(
        line("platform=\"discord\"").contains("endpoint=true"),
        "{text}"
    );
    let slack_problem = line("platform=slack (HTTP endpoints)");
    assert!(
        slack_problem.contains("the bot is not in the deployments channel #ch-c0deploys")
            && slack_problem.contains("type /invite @tminus in #ch-c0deploys"),
        "{slack_problem}"
    );
    for secret in [fake_slack::BOT_TOKEN, "doctor-secret", fake_discord::TOKEN] {
        assert!(!text.contains(secret), "a secret in serve's log:\n{text}");
    }
    let discord_ok = line("platform=discord (interactions endpoint)");
    assert!(discord_ok.contains("set-up checks passed"), "{discord_ok}");
}
