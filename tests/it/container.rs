//! The container set-up, checked without a container engine: the
//! Dockerfile's build stage copies exactly what `cargo build --release --bin
//! tminus` reads (held against Cargo.toml's targets and every file the code
//! includes), the image runs as a non-root user with a health check, the
//! health check command answers as a container engine needs, and
//! `compose.yaml` runs two `serve` replicas on one PostgreSQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::{run_tminus, sqlite_db, tool, ServeProcess};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The instructions of each stage: (instruction, its arguments).
fn stages() -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut joined = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        joined.push_str(line.trim_end_matches('\\'));
        joined.push(' ');
        if line.ends_with('\\') {
            continue;
        }
        let (op, args) = joined.trim().split_once(' ').unwrap_or((joined.trim(), ""));
        let (op, args) = (op.to_uppercase(), args.trim().to_string());
        if op == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("FROM first").push((op, args));
        joined.clear();
    }
    stages
}

/// Files `include_str!` / `include_bytes!` read, resolved from each file
/// under `src`.
fn included_files(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for macro_name in ["include_str!(\"", "include_bytes!(\""] {
                for rest in text.split(macro_name).skip(1) {
                    let relative = rest.split('"').next().unwrap();
                    out.push(path.parent().unwrap().join(relative));
                }
            }
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn the_build_stage_copies_exactly_what_the_release_build_reads() {
    let stages = stages();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let build = &stages[0];
    let context = tempfile::tempdir().unwrap();
    let mut sources = Vec::new();
    for (_, args) in build.iter().filter(|(op, _)| op == "COPY") {
        let words: Vec<&str> = args.split_whitespace().collect();
        let (dest, srcs) = words.split_last().unwrap();
        for src in srcs {
            let target = if dest.ends_with('/') && srcs.len() > 1 || *dest == "./" {
                context.path().join(src)
            } else {
                context.path().join(dest.trim_start_matches("./"))
            };
            copy_tree(&root().join(src), &target);
            sources.push(src.to_string());
        }
    }
    let run = build
        .iter()
        .find(|(op, _)| op == "RUN")
        .map(|(_, a)| a.as_str());
    assert!(
        run.is_some_and(|r| r.contains("cargo build --release --locked --bin tminus")),
        "{run:?}"
    );

    // Cargo reads the manifest there: the library and the binary resolve.
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(context.path().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let targets = meta["packages"][0]["targets"].as_array().unwrap();
    let mut needed: BTreeSet<String> = ["Cargo.toml".to_string(), "Cargo.lock".to_string()].into();
    for target in targets {
        let kinds: Vec<&str> = target["kind"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if !kinds.iter().any(|k| *k == "lib" || *k == "bin") {
            continue;
        }
        let path = PathBuf::from(target["src_path"].as_str().unwrap());
        assert!(
            path.is_file(),
            "{} is not in the build context",
            path.display()
        );
        let top = path
            .strip_prefix(context.path())
            .unwrap()
            .components()
            .next()
            .unwrap();
        needed.insert(top.as_os_str().to_string_lossy().into_owned());
    }
    // Every file the code includes is there too.
    for file in included_files(&context.path().join("src")) {
        assert!(
            file.is_file(),
            "{} is included by the code but not copied",
            file.display()
        );
        let file = file.canonicalize().unwrap();
        let top = file
            .strip_prefix(context.path().canonicalize().unwrap())
            .unwrap()
            .components()
            .next()
            .unwrap();
        needed.insert(top.as_os_str().to_string_lossy().into_owned());
    }
    let copied: BTreeSet<String> = sources.into_iter().collect();
    assert_eq!(
        copied, needed,
        "the build stage should copy exactly what the build reads"
    );
    let ignored = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignored.lines().any(|l| l.trim() == "target"),
        "target/ stays out of the context"
    );
}

#[test]
fn the_image_runs_as_a_non_root_user_with_a_health_check() {
    let stages = stages();
    let runtime = &stages[1];
    let value = |op: &str| {
        runtime
            .iter()
            .rfind(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {op} in the runtime stage"))
    };
    let user = value("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runs as {user}");
    let health = value("HEALTHCHECK");
    assert!(
        health.contains(r#"CMD ["tminus", "healthcheck"]"#),
        "{health}"
    );
    assert!(value("CMD").contains("serve"));
    assert!(runtime.iter().any(|(op, a)| op == "COPY"
        && a.contains("--from=build")
        && a.contains("/usr/local/bin/tminus")));
    assert!(value("ENV").contains("TMINUS_LISTEN=0.0.0.0:3000"));
}

fn healthcheck(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let args: Vec<&str> = ["healthcheck"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let (code, _, stderr) = run_tminus(&args, &["TMINUS_LISTEN"], env);
    (code, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_passes_on_a_ready_server_and_fails_otherwise() {
    let db = sqlite_db();
    let serve = ServeProcess::start(&db.url, &[]);
    let ready = serve.url("/readyz");
    crate::helpers::poll_until(
        "readiness",
        || vec![healthcheck(&["--url", &ready], &[])],
        |answers| answers[0].0 == 0,
        |(code, err)| format!("{code}: {err}"),
    )
    .await;
    // Without --url: this host, at the port TMINUS_LISTEN names.
    let port = serve.addr.rsplit(':').next().unwrap().to_string();
    let (code, err) = healthcheck(&[], &[("TMINUS_LISTEN", format!("0.0.0.0:{port}"))]);
    assert_eq!(code, 0, "{err}");
    drop(serve);
    let (code, err) = healthcheck(&["--url", &ready], &[]);
    assert_eq!(code, 1);
    assert!(err.contains(&ready), "{err}");
}

#[test]
fn compose_runs_two_serve_replicas_on_one_postgresql() {
    let Some(python) = tool("python3") else {
        return;
    };
    let has_yaml = Command::new(&python)
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_yaml {
        assert!(
            std::env::var_os("CI").is_none(),
            "PyYAML is not installed; .ci/run installs it"
        );
        eprintln!("PyYAML is not installed (pip install pyyaml): skipping this test");
        return;
    }
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(root().join("compose.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compose.yaml does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compose: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = compose["services"].as_object().unwrap();
    let db = services
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("postgres:"))
        })
        .map(|(name, _)| name.clone())
        .expect("a PostgreSQL service");
    let replicas: Vec<&Value> = services.values().filter(|s| s["build"] == ".").collect();
    assert_eq!(
        replicas.len(),
        2,
        "two tminus replicas built from this Dockerfile"
    );
    let mut ports = BTreeSet::new();
    for r in &replicas {
        // The image's CMD is `serve`; a replica must not replace it.
        assert!(r.get("command").is_none(), "{r}");
        let url = r["environment"]["DATABASE_URL"].as_str().unwrap();
        assert!(
            url.starts_with("postgres://") && url.contains(&format!("@{db}:")),
            "{url}"
        );
        assert_eq!(r["depends_on"][&db]["condition"], "service_healthy");
        let port = r["ports"][0]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_string();
        ports.insert(port);
        assert_eq!(r["environment"]["TMINUS_LISTEN"], "0.0.0.0:3000");
    }
    assert_eq!(ports.len(), 2, "each replica has its own port");
    assert_eq!(
        replicas[0]["environment"]["DATABASE_URL"], replicas[1]["environment"]["DATABASE_URL"],
        "one database for both"
    );
    assert!(services[&db]["healthcheck"]["test"]
        .to_string()
        .contains("pg_isready"));
}
