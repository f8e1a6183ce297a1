//! The real `tminus serve` as a child process (the figures for memory, cold
//! start and acknowledgements come from the binary people run, not from a
//! copy of its wiring), and what Linux says about processes and the machine:
//! resident memory and CPU time from /proc, load average, CPU model.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::fake::{Fake, DISCORD_APP_ID, DISCORD_TOKEN, SLACK_TOKEN};

pub const SLACK_SECRET: &str = "bench-signing-secret";

/// The Ed25519 key the benchmark signs Discord interactions with.
pub fn discord_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

/// A running `tminus serve`, SIGKILLed when dropped.
pub struct Serve {
    child: Child,
    pub pid: u32,
    pub addr: String,
    /// Its standard error (RUST_LOG=error), kept to count what went wrong.
    pub log: PathBuf,
    /// From spawning to `/readyz` answering 200.
    pub ready_after: Duration,
}

impl Serve {
    /// Start `tminus serve` on port 0 with Slack (HTTP) and Discord (the
    /// interactions endpoint) on, both talking to `fake`, and wait until
    /// `/readyz` says ready.
    pub async fn start(
        config_dir: &Path,
        db_url: &str,
        fake: &Fake,
        log: PathBuf,
    ) -> Result<Serve> {
        Serve::start_on(config_dir, db_url, fake, log, None).await
    }

    /// [`Serve::start`], the process held to the CPUs `cores` names (a
    /// `taskset` list) from its first instruction, so it sizes its runtime
    /// to them as it would on a machine of that size.
    pub async fn start_on(
        config_dir: &Path,
        db_url: &str,
        fake: &Fake,
        log: PathBuf,
        cores: Option<&str>,
    ) -> Result<Serve> {
        let public_key = tminus::hex::encode(discord_key().verifying_key().as_bytes());
        let started = Instant::now();
        let bin = env!("CARGO_BIN_EXE_tminus");
        let mut command = match cores {
            Some(cores) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cores, bin]);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(config_dir)
            .env("DATABASE_URL", db_url)
            .env("TMINUS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "error")
            .env("SLACK_BOT_TOKEN", SLACK_TOKEN)
            .env("SLACK_SIGNING_SECRET", SLACK_SECRET)
            .env("SLACK_API_URL", fake.slack_api_url())
            .env_remove("SLACK_APP_TOKEN")
            .env("DISCORD_TOKEN", DISCORD_TOKEN)
            .env("DISCORD_PUBLIC_KEY", public_key)
            .env("DISCORD_APPLICATION_ID", DISCORD_APP_ID)
            .env("DISCORD_API_URL", fake.discord_api_url())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting tminus serve")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("serve's stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            line
        })
        .await?;
        let Some(addr) = line
            .trim()
            .strip_prefix("tminus listening on http://")
            .map(str::to_string)
        else {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("tminus serve did not start: {line:?}\n{err}");
        };
        let mut serve = Serve {
            child,
            pid,
            addr,
            log,
            ready_after: Duration::ZERO,
        };
        let client = reqwest::Client::new();
        let url = serve.url("/readyz");
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("tminus serve was not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        serve.ready_after = started.elapsed();
        Ok(serve)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Resident set size and its peak, in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.pid)
    }

    pub fn cpu(&self) -> Duration {
        cpu_time(&format!("/proc/{}/stat", self.pid))
    }

    /// Lines its log holds (RUST_LOG=error: each is an error).
    pub fn logged_errors(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Note in `report` how many error lines it logged `during` a part of
    /// the run on database `name`, if any.
    pub fn note_errors(&self, report: &mut crate::report::Report, name: &str, during: &str) {
        let errors = self.logged_errors();
        if errors > 0 {
            report.note(format!(
                "{name}: tminus serve logged {errors} error lines during {during} (see {})",
                self.log.display()
            ));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU time from a `/proc/…/stat` file. Linux reports it
/// in USER_HZ ticks, which are 1/100 s on every architecture it supports,
/// so figures are good to 10 ms: the benchmark measures over many events.
pub fn cpu_time(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // The command name (field 2) may hold spaces; count from after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// This process's CPU time, all threads.
pub fn self_cpu() -> Duration {
    cpu_time("/proc/self/stat")
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What the figures came from: CPUs, model, memory, compiler, commit.
pub fn machine() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "?".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    vec![
        (
            "cpus",
            std::thread::available_parallelism().map_or("?".into(), |n| n.to_string()),
        ),
        ("cpu model", model),
        ("memory", mem),
        ("rustc", run("rustc", &["--version"])),
        ("commit", run("git", &["rev-parse", "--short", "HEAD"])),
        ("load average at start", loadavg()),
    ]
}
