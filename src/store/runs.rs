//! Runs with their items and sign-offs: insert, load (with a write lock
//! inside a transaction), save the difference, and the listings commands need.

use std::collections::BTreeMap;

use super::{col, from_ms, ms, opt_from_ms, Arg, Dialect, Reads, Row, Store, Tx};
use crate::domain::{
    CheckResult, ItemReport, ItemState, PersonId, Platform, ReportStatus, RoleId, Run, RunId,
    RunStatus, SignOff, Verdict,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

const RUN_COLUMNS: &str = "id, platform, channel, number, service, version, env, runbook, \
    runbook_version, started_by, started_at, status, phase, phase_entered_at, t0, ended_at, end_reason";

impl Tx {
    /// Insert a new run, giving it the next number in its channel.
    pub async fn insert_run(&mut self, run: &mut Run) -> Result<()> {
        let channel_key = format!("{}:{}", run.platform, run.channel);
        let number: i64 = self
            .scalar(
                "INSERT INTO run_counters (channel_key, last) VALUES ($1, 1) \
                 ON CONFLICT (channel_key) DO UPDATE SET last = run_counters.last + 1 \
                 RETURNING last",
                &[channel_key.into()],
            )
            .await
            .context("allocating the run number")?;
        run.number = number;
        let id: i64 = self
            .scalar(
                "INSERT INTO runs (platform, channel, number, service, version, env, runbook, \
                 runbook_version, started_by, started_at, status, phase, phase_entered_at, t0, \
                 ended_at, end_reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 RETURNING id",
                &[
                    run.platform.as_str().into(),
                    (&run.channel).into(),
                    run.number.into(),
                    (&run.service).into(),
                    (&run.version).into(),
                    (&run.env).into(),
                    (&run.runbook).into(),
                    run.runbook_version.as_deref().into(),
                    run.started_by.as_str().into(),
                    ms(run.started_at).into(),
                    run.status.as_str().into(),
                    (&run.phase).into(),
                    ms(run.phase_entered_at).into(),
                    run.t0.map(ms).into(),
                    run.ended_at.map(ms).into(),
                    run.end_reason.as_deref().into(),
                ],
            )
            .await
            .context("inserting the run")?;
        run.id = RunId(id);
        let empty = Run {
            items: BTreeMap::new(),
            signoffs: Vec::new(),
            checks: BTreeMap::new(),
            ..run.clone()
        };
        self.write_children(&empty, run).await
    }

    /// Load a run and hold its write lock until the transaction ends, so
    /// concurrent commands on one run apply one after the other.
    pub async fn lock_run(&mut self, id: RunId) -> Result<Option<Run>> {
        self.load_run(id, true).await
    }

    /// Load a run inside the transaction without taking its lock.
    pub async fn read_run(&mut self, id: RunId) -> Result<Option<Run>> {
        self.load_run(id, false).await
    }

    /// [`Tx::lock_run`] and [`Tx::first_time`] for `key` together; with no key the request counts as new. Returns the
    /// run and whether the request is new. Whoever goes on to refuse or
    /// change nothing drops the transaction, which forgets the key again.
    pub async fn lock_run_once(
        &mut self,
        id: RunId,
        key: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Option<Run>, bool)> {
        let (run, seen) = self.load_run_with(id, true, key.map(|k| (k, now))).await?;
        Ok((run, key.is_none() || seen))
    }

    async fn load_run(&mut self, id: RunId, lock: bool) -> Result<Option<Run>> {
        Ok(self.load_run_with(id, lock, None).await?.0)
    }

    /// The run's row and its children, and the request key recorded when
    /// one is given (true if it was new), the rows told apart by their
    /// columns.
    async fn load_run_with(
        &mut self,
        id: RunId,
        lock: bool,
        key: Option<(&str, DateTime<Utc>)>,
    ) -> Result<(Option<Run>, bool)> {
        let dialect = self.dialect();
        // On PostgreSQL the children's statement records the key too, one
        // round trip fewer (see `run_statements`).
        let keyed = key.is_some() && dialect == Dialect::Postgres;
        let sql = run_statements(dialect, lock, keyed);
        let mut args = vec![Arg::from(id.0)];
        args.extend(
            key.iter()
                .flat_map(|(k, at)| [Arg::from(*k), ms(*at).into()]),
        );
        let mut statements: Vec<(&str, &[Arg])> =
            sql.iter().map(|s| (s.as_str(), &args[..1])).collect();
        if keyed {
            statements.last_mut().expect("the children's statement").1 = &args[..];
        } else if key.is_some() {
            statements.push((super::FIRST_TIME_SQL, &args[1..]));
        }
        let rows = self.fetch(&statements).await.context("loading the run")?;
        // The key's column is NULL when the key was already recorded.
        let new_key = rows
            .iter()
            .any(|r| matches!(r.get::<Option<String>>("request_key"), Ok(Some(_))));
        Ok((assemble(id, &rows)?, new_key))
    }

    /// Write what changed between `before` and `after` (the same run).
    pub async fn save_run(&mut self, before: &Run, after: &Run) -> Result<()> {
        // Most clicks change only an item or a sign-off: one statement fewer
        // under the write lock when the run's own row stays as it was.
        let unchanged = before.status == after.status
            && before.phase == after.phase
            && before.phase_entered_at == after.phase_entered_at
            && before.t0 == after.t0
            && before.ended_at == after.ended_at
            && before.end_reason == after.end_reason;
        if unchanged {
            return self.write_children(before, after).await;
        }
        self.write(
            "UPDATE runs SET status = $2, phase = $3, phase_entered_at = $4, t0 = $5, \
             ended_at = $6, end_reason = $7 WHERE id = $1",
            &[
                after.id.0.into(),
                after.status.as_str().into(),
                (&after.phase).into(),
                ms(after.phase_entered_at).into(),
                after.t0.map(ms).into(),
                after.ended_at.map(ms).into(),
                after.end_reason.as_deref().into(),
            ],
        )
        .await
        .context("updating the run")?;
        self.write_children(before, after).await
    }

    async fn write_children(&mut self, before: &Run, after: &Run) -> Result<()> {
        let id = after.id.0;
        for (key, _) in before
            .items
            .iter()
            .filter(|(k, _)| !after.items.contains_key(*k))
        {
            self.write(
                "DELETE FROM run_items WHERE run_id = $1 AND phase = $2 AND item = $3",
                &[id.into(), (&key.0).into(), (&key.1).into()],
            )
            .await?;
        }
        for ((phase, item), state) in &after.items {
            if before.items.get(&(phase.clone(), item.clone())) == Some(state) {
                continue;
            }
            let (name, by, at, reason) = match state {
                ItemState::Pending => continue,
                ItemState::Done { by, at } => ("done", by, at, None),
                ItemState::NotApplicable { by, at, reason } => {
                    ("not_applicable", by, at, Some(reason))
                }
            };
            self.write(
                "INSERT INTO run_items (run_id, phase, item, state, by_person, at, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (run_id, phase, item) DO UPDATE SET state = excluded.state, \
                 by_person = excluded.by_person, at = excluded.at, reason = excluded.reason",
                &[
                    id.into(),
                    phase.into(),
                    item.into(),
                    name.into(),
                    by.as_str().into(),
                    ms(*at).into(),
                    reason.map(String::as_str).into(),
                ],
            )
            .await
            .context("saving an item")?;
        }
        for ((phase, item), c) in &after.checks {
            if before.checks.get(&(phase.clone(), item.clone())) == Some(c) {
                continue;
            }
            self.write(
                "INSERT INTO item_checks (run_id, phase, item, outcome, detail, at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (run_id, phase, item) DO UPDATE SET outcome = excluded.outcome, \
                 detail = excluded.detail, at = excluded.at",
                &[
                    id.into(),
                    phase.into(),
                    item.into(),
                    if c.passed { "passed" } else { "failed" }.into(),
                    (&c.detail).into(),
                    ms(c.at).into(),
                ],
            )
            .await
            .context("saving a check result")?;
        }
        for ((phase, item), r) in &after.reports {
            if before.reports.get(&(phase.clone(), item.clone())) == Some(r) {
                continue;
            }
            self.write(
                "INSERT INTO item_reports (run_id, phase, item, status, by_name, url, note, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (run_id, phase, item) DO UPDATE SET status = excluded.status, \
                 by_name = excluded.by_name, url = excluded.url, note = excluded.note, at = excluded.at",
                &[
                    id.into(),
                    phase.into(),
                    item.into(),
                    r.status.as_str().into(),
                    (&r.by).into(),
                    r.url.as_deref().into(),
                    r.note.as_deref().into(),
                    ms(r.at).into(),
                ],
            )
            .await
            .context("saving a pipeline report")?;
        }
        for s in after
            .signoffs
            .iter()
            .filter(|s| !before.signoffs.contains(s))
        {
            let (verdict, reason) = match &s.verdict {
                Verdict::Approved => ("approved", None),
                Verdict::Rejected { reason } => ("rejected", Some(reason.as_str())),
            };
            self.write(
                "INSERT INTO signoffs (run_id, phase, role, person, verdict, reason, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (run_id, phase, role, person) DO UPDATE SET \
                 verdict = excluded.verdict, reason = excluded.reason, at = excluded.at",
                &[
                    id.into(),
                    (&s.phase).into(),
                    s.role.as_str().into(),
                    s.person.as_str().into(),
                    verdict.into(),
                    reason.into(),
                    ms(s.at).into(),
                ],
            )
            .await
            .context("saving a sign-off")?;
        }
        Ok(())
    }
}

/// Where a run lives ([`Store::run_place`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlace {
    pub platform: Platform,
    pub channel: String,
    pub number: i64,
    pub thread: Option<String>,
}

impl Store {
    pub async fn run(&self, id: RunId) -> Result<Option<Run>> {
        load_run(&mut &*self, self.dialect(), id).await
    }

    /// Where a run lives: its platform, its channel, its number there, and
    /// the thread its messages go to once the root message has one (a
    /// Discord thread is a channel of its own; Slack's thread is in the
    /// channel).
    pub async fn run_place(&self, id: RunId) -> Result<Option<RunPlace>> {
        let row = self
            .row(
                "SELECT r.platform, r.channel, r.number, m.thread_ref FROM runs r \
                 LEFT JOIN messages m ON m.message_key = $2 WHERE r.id = $1",
                &[id.0.into(), crate::chat::keys::root(id).into()],
            )
            .await?;
        row.map(|r| {
            Ok(RunPlace {
                platform: Platform::parse(&col::<String>(&r, "platform")?)
                    .context("a run's platform")?,
                channel: col(&r, "channel")?,
                number: col(&r, "number")?,
                thread: col(&r, "thread_ref")?,
            })
        })
        .transpose()
    }

    /// The run whose thread is `thread` on `platform`, if any: a Discord
    /// thread is a channel of its own, so a command typed in it names its
    /// run by where it is typed.
    pub async fn run_in_thread(&self, platform: Platform, thread: &str) -> Result<Option<RunId>> {
        let rows = self
            .rows(
                "SELECT message_key FROM messages WHERE platform = $1 AND thread_ref = $2 \
                 AND message_key LIKE 'run:%:root'",
                &[platform.as_str().into(), thread.into()],
            )
            .await?;
        let keys = rows
            .iter()
            .map(|r| r.first::<String>())
            .collect::<Result<Vec<_>>>()?;
        Ok(keys.iter().find_map(|k| {
            k.strip_prefix("run:")?
                .strip_suffix(":root")?
                .parse()
                .ok()
                .map(RunId)
        }))
    }

    /// The run numbered `number` in a channel.
    pub async fn run_by_number(
        &self,
        platform: Platform,
        channel: &str,
        number: i64,
    ) -> Result<Option<Run>> {
        let id = self
            .row(
                "SELECT id FROM runs WHERE platform = $1 AND channel = $2 AND number = $3",
                &[platform.as_str().into(), channel.into(), number.into()],
            )
            .await?
            .map(|r| r.first::<i64>())
            .transpose()?;
        match id {
            Some(id) => self.run(RunId(id)).await,
            None => Ok(None),
        }
    }

    /// The most recent runs of a channel, newest first, without their items.
    pub async fn recent_runs(
        &self,
        platform: Platform,
        channel: &str,
        limit: i64,
    ) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE platform = $1 AND channel = $2 \
             ORDER BY number DESC LIMIT $3"
        );
        let rows = self
            .rows(
                &sql,
                &[platform.as_str().into(), channel.into(), limit.into()],
            )
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The most recent runs of every channel and platform, newest first,
    /// without their items (for the run list page).
    pub async fn latest_runs(&self, limit: i64) -> Result<Vec<Run>> {
        let sql =
            format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT $1");
        let rows = self.rows(&sql, &[limit.into()]).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The latest runs of `service` (any when `None`) in `status` (any when
    /// `None`), newest first.
    pub async fn find_runs(
        &self,
        service: Option<&str>,
        status: Option<RunStatus>,
        limit: i64,
    ) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR service = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
             ORDER BY started_at DESC, id DESC LIMIT $3"
        );
        let args = [
            service.into(),
            status.map(RunStatus::as_str).into(),
            limit.into(),
        ];
        let rows = self.rows(&sql, &args).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Ids of every run not yet finished, oldest first.
    pub async fn open_run_ids(&self) -> Result<Vec<RunId>> {
        let rows = self
            .rows(
                "SELECT id FROM runs WHERE status IN ('active', 'rolling_back') ORDER BY id",
                &[],
            )
            .await?;
        rows.iter().map(|r| Ok(RunId(r.first()?))).collect()
    }
}

/// The statements that load a run: its row, and its items, sign-offs,
/// check results, pipeline reports and unresolved incidents as one JSON
/// array in a `children` column — one row instead of one per
/// child. Each child is
/// `[kind, phase, a, b, c, at, reason]`, where `a`, `b`, `c` are item,
/// state, by_person for an item; role, person, verdict for a sign-off;
/// item, outcome, detail for a check; item, status, by_name for a report
/// (its url and note as a JSON object in `reason`); and the id and status
/// of an incident.
///
/// On SQLite both come in one statement. On PostgreSQL the children are
/// read by a second statement, after the first has the run's row lock: a
/// statement reads the rows committed when it began, so one that waited for
/// the lock would miss what the transaction it waited for wrote. The two
/// go to the server together all the same (`pg`): it starts the second
/// when the first is done. With
/// `key`, that second statement also records a request key ($2, at $3) and
/// answers with it in `request_key`, NULL if it was recorded before.
fn run_statements(dialect: Dialect, lock: bool, key: bool) -> Vec<String> {
    let report_extra = match dialect {
        Dialect::Sqlite => "json_object('url', url, 'note', note)",
        Dialect::Postgres => "json_build_object('url', url, 'note', note)::text",
    };
    let children = format!(
        "SELECT 'item' AS kind, phase, item AS a, state AS b, by_person AS c, at, reason \
         FROM run_items WHERE run_id = $1 \
         UNION ALL \
         SELECT 'signoff' AS kind, phase, role AS a, person AS b, verdict AS c, at, reason \
         FROM signoffs WHERE run_id = $1 \
         UNION ALL \
         SELECT 'check' AS kind, phase, item AS a, outcome AS b, detail AS c, at, NULL AS reason \
         FROM item_checks WHERE run_id = $1 \
         UNION ALL \
         SELECT 'report' AS kind, phase, item AS a, status AS b, by_name AS c, at, \
         {report_extra} AS reason FROM item_reports WHERE run_id = $1 \
         UNION ALL \
         SELECT 'incident' AS kind, '' AS phase, CAST(id AS TEXT) AS a, status AS b, '' AS c, \
         opened_at AS at, NULL AS reason \
         FROM incidents WHERE run_id = $1 AND status <> 'resolved'"
    );
    match dialect {
        Dialect::Sqlite => vec![format!(
            "SELECT {RUN_COLUMNS}, (SELECT json_group_array(json_array(kind, phase, a, b, c, at, reason)) \
             FROM ({children})) AS children FROM runs WHERE id = $1"
        )],
        Dialect::Postgres => vec![
            format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1{}",
                if lock { " FOR UPDATE" } else { "" }
            ),
            format!(
                "{record}SELECT COALESCE(json_agg(json_build_array(kind, phase, a, b, c, at, reason)), '[]')::text \
                 AS children{answer} FROM ({children}) AS ch",
                record = if key {
                    format!("WITH k AS ({}) ", super::batch::renumber(super::FIRST_TIME_SQL, 1))
                } else {
                    String::new()
                },
                answer = if key {
                    ", (SELECT request_key FROM k) AS request_key"
                } else {
                    ""
                },
            ),
        ],
    }
}

async fn load_run(db: &mut impl Reads, dialect: Dialect, id: RunId) -> Result<Option<Run>> {
    let mut rows = Vec::new();
    for sql in run_statements(dialect, false, false) {
        rows.extend(db.rows(&sql, &[id.0.into()]).await?);
    }
    assemble(id, &rows)
}

/// One item or sign-off as [`run_statements`] lists it.
type Child = (String, String, String, String, String, i64, Option<String>);

/// A run from the rows [`run_statements`] answer with (and any others,
/// which are passed over); `None` without the run's row.
fn assemble(id: RunId, rows: &[Row]) -> Result<Option<Run>> {
    let Some(row) = rows.iter().find(|r| r.has("service")) else {
        return Ok(None);
    };
    let mut run = run_from_row(row)?;
    let children = rows
        .iter()
        .find(|r| r.has("children"))
        .context("the items and sign-offs are missing")?;
    let mut children: Vec<Child> = serde_json::from_str(&col::<String>(children, "children")?)
        .with_context(|| format!("reading the items and sign-offs of run {id}"))?;
    children.sort_by(|x, y| (&x.0, x.5, &x.3).cmp(&(&y.0, y.5, &y.3)));
    for (kind, phase, a, b, c, at, reason) in children {
        let at = from_ms(at);
        let reason = reason.unwrap_or_default();
        if kind == "incident" {
            let incident: i64 = a.parse().context("an incident id")?;
            run.open_incident = Some(run.open_incident.map_or(incident, |i| i.min(incident)));
        } else if kind == "check" {
            let passed = b == "passed";
            run.checks.insert(
                (phase, a),
                CheckResult {
                    passed,
                    detail: c,
                    at,
                },
            );
        } else if kind == "report" {
            #[derive(serde::Deserialize)]
            struct Extra {
                url: Option<String>,
                note: Option<String>,
            }
            let extra: Extra = serde_json::from_str(&reason).context("a report's url and note")?;
            let status = ReportStatus::parse(&b)
                .with_context(|| format!("run {id} has a report in unknown state {b:?}"))?;
            run.reports.insert(
                (phase, a),
                ItemReport {
                    status,
                    by: c,
                    url: extra.url,
                    note: extra.note,
                    at,
                },
            );
        } else if kind == "item" {
            let by = PersonId::new(c);
            let state = match b.as_str() {
                "done" => ItemState::Done { by, at },
                "not_applicable" => ItemState::NotApplicable { by, at, reason },
                other => anyhow::bail!("run {id} has an item in unknown state {other:?}"),
            };
            run.items.insert((phase, a), state);
        } else {
            let verdict = match c.as_str() {
                "approved" => Verdict::Approved,
                _ => Verdict::Rejected { reason },
            };
            run.signoffs.push(SignOff {
                phase,
                role: RoleId::new(a),
                person: PersonId::new(b),
                verdict,
                at,
            });
        }
    }
    Ok(Some(run))
}

fn run_from_row(row: &Row) -> Result<Run> {
    let platform: String = col(row, "platform")?;
    let status: String = col(row, "status")?;
    Ok(Run {
        id: RunId(col(row, "id")?),
        platform: Platform::parse(&platform)
            .with_context(|| format!("unknown platform {platform:?}"))?,
        channel: col(row, "channel")?,
        number: col(row, "number")?,
        service: col(row, "service")?,
        version: col(row, "version")?,
        env: col(row, "env")?,
        runbook: col(row, "runbook")?,
        runbook_version: col(row, "runbook_version")?,
        started_by: PersonId::new(col::<String>(row, "started_by")?),
        started_at: from_ms(col(row, "started_at")?),
        status: RunStatus::parse(&status).with_context(|| format!("unknown status {status:?}"))?,
        phase: col(row, "phase")?,
        phase_entered_at: from_ms(col(row, "phase_entered_at")?),
        t0: opt_from_ms(col(row, "t0")?),
        ended_at: opt_from_ms(col(row, "ended_at")?),
        end_reason: col(row, "end_reason")?,
        items: BTreeMap::new(),
        signoffs: Vec::new(),
        checks: BTreeMap::new(),
        open_incident: None,
        reports: BTreeMap::new(),
    })
}
