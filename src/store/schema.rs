//! The database schema: the migrations built into the binary, and a
//! read-only look at how far a database has come (`tminus doctor`).
//!
//! The migrations are listed here with `include_str!` rather than found by
//! sqlx's `migrate!` macro: the macro needs sqlx's `macros` feature, which
//! compiles sqlx and SQLite's C library a second time for the compiler, a
//! minute of every cold build for one directory listing. A test checks this
//! list against `migrations/` file by file, and the versions, descriptions
//! and checksums are the ones the macro made, so databases migrated by
//! earlier builds carry on.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, Connection, Row, SqlSafeStr};

use super::Dialect;

/// One migration file: version, description (the file name's words) and SQL.
type Source = (i64, &'static str, &'static str);

const SQLITE: &[Source] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "monitoring",
        include_str!("../../migrations/sqlite/0002_monitoring.sql"),
    ),
    (
        3,
        "oncall",
        include_str!("../../migrations/sqlite/0003_oncall.sql"),
    ),
    (
        4,
        "outbox_edits",
        include_str!("../../migrations/sqlite/0004_outbox_edits.sql"),
    ),
    (
        5,
        "item_checks",
        include_str!("../../migrations/sqlite/0005_item_checks.sql"),
    ),
    (
        6,
        "runbook_versions",
        include_str!("../../migrations/sqlite/0006_runbook_versions.sql"),
    ),
    (
        7,
        "outbox_uncertain",
        include_str!("../../migrations/sqlite/0007_outbox_uncertain.sql"),
    ),
    (
        8,
        "pipelines",
        include_str!("../../migrations/sqlite/0008_pipelines.sql"),
    ),
];

const POSTGRES: &[Source] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "audit_log_no_truncate",
        include_str!("../../migrations/postgres/0002_audit_log_no_truncate.sql"),
    ),
    (
        3,
        "monitoring",
        include_str!("../../migrations/postgres/0003_monitoring.sql"),
    ),
    (
        4,
        "oncall",
        include_str!("../../migrations/postgres/0004_oncall.sql"),
    ),
    (
        5,
        "outbox_edits",
        include_str!("../../migrations/postgres/0005_outbox_edits.sql"),
    ),
    (
        6,
        "item_checks",
        include_str!("../../migrations/postgres/0006_item_checks.sql"),
    ),
    (
        7,
        "runbook_versions",
        include_str!("../../migrations/postgres/0007_runbook_versions.sql"),
    ),
    (
        8,
        "outbox_uncertain",
        include_str!("../../migrations/postgres/0008_outbox_uncertain.sql"),
    ),
    (
        9,
        "pipelines",
        include_str!("../../migrations/postgres/0009_pipelines.sql"),
    ),
    (
        10,
        "outbox_edit_index",
        include_str!("../../migrations/postgres/0010_outbox_edit_index.sql"),
    ),
];

/// The migration files of one dialect, as listed in this binary.
pub fn sources(dialect: Dialect) -> &'static [Source] {
    match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    }
}

fn migration((version, name, sql): &Source) -> Migration {
    Migration::new(
        *version,
        Cow::Owned(name.replace('_', " ")),
        MigrationType::Simple,
        sqlx::AssertSqlSafe(*sql).into_sql_str(),
        sql.starts_with("-- no-transaction"),
    )
}

/// The migrator for one dialect.
pub fn migrator(dialect: Dialect) -> Migrator {
    Migrator::with_migrations(sources(dialect).iter().map(migration).collect())
}

/// How a database's schema compares with this binary's migrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaState {
    /// A SQLite file that does not exist yet; `serve` creates it.
    NotCreated,
    Checked {
        /// Migrations applied and known to this binary.
        applied: usize,
        /// Known migrations not applied yet (`serve` applies them at start),
        /// as `0009 pipelines`.
        pending: Vec<String>,
        /// Applied by another (newer) build of tminus: this one must not run here.
        unknown: Vec<i64>,
        /// Started and not finished: the database needs a person.
        failed: Vec<i64>,
        /// Applied from a different text than this binary's.
        altered: Vec<i64>,
    },
}

impl SchemaState {
    /// Whether `serve` could start on this database.
    pub fn usable(&self) -> bool {
        match self {
            SchemaState::NotCreated => true,
            SchemaState::Checked {
                unknown,
                failed,
                altered,
                ..
            } => unknown.is_empty() && failed.is_empty() && altered.is_empty(),
        }
    }
}

/// Check that a SQLite database can be written: its directory takes a new
/// file (SQLite creates the `-wal` and `-shm` files beside the database),
/// and the database, `-wal` and `-shm` files that exist open for writing.
/// SQLite maps `-shm` into memory; one it cannot write ends the process
/// with SIGBUS at the first write, with nothing logged, so this is said
/// at start-up instead, naming the file.
pub fn check_sqlite_files(url: &str) -> Result<()> {
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    let path = Path::new(&path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let probe = dir.join(format!(".tminus-write-check-{}", std::process::id()));
    std::fs::File::create(&probe).with_context(|| {
        format!(
            "cannot create files in {} (SQLite keeps its -wal and -shm files beside the database)",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    for file in files.iter().filter(|f| f.exists()) {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .with_context(|| {
                format!(
                    "cannot open {} for writing (tminus writes the database and its -wal and -shm files)",
                    file.display()
                )
            })?;
    }
    Ok(())
}

/// The path of a SQLite URL's file, percent-decoded as sqlx decodes it,
/// or `None` for an in-memory database.
pub(crate) fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| {
        percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// The SQLite URL's parameters that `serve` accepts: only `mode=rwc` or
/// `mode=rw` (it writes the database). Others would be read by the
/// migrations' connection and not by the store's, so they are refused.
pub(crate) fn check_sqlite_params(url: &str) -> Result<()> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(());
    };
    for param in query.split('&').filter(|p| !p.is_empty()) {
        anyhow::ensure!(
            matches!(param, "mode=rwc" | "mode=rw"),
            "DATABASE_URL's SQLite parameter {param:?} is not supported \
             (tminus opens the file for reading and writing; give the path alone)"
        );
    }
    Ok(())
}

/// Look at database `url` without creating or changing anything.
pub async fn inspect(url: &str) -> Result<SchemaState> {
    sqlx::any::install_default_drivers();
    let dialect = Dialect::of(url)?;
    let url = match dialect {
        Dialect::Sqlite => {
            if let Some(path) = sqlite_path(url) {
                let path = Path::new(&path);
                if !path.exists() {
                    let dir = match path.parent() {
                        Some(d) if !d.as_os_str().is_empty() => d,
                        _ => Path::new("."),
                    };
                    match std::fs::metadata(dir) {
                        Ok(m) if m.is_dir() && !m.permissions().readonly() => {
                            return Ok(SchemaState::NotCreated)
                        }
                        Ok(_) => anyhow::bail!(
                            "{} does not exist and its directory {} cannot take it",
                            path.display(),
                            dir.display()
                        ),
                        Err(e) => anyhow::bail!(
                            "{} does not exist and neither does its directory {} ({e})",
                            path.display(),
                            dir.display()
                        ),
                    }
                }
            }
            // Read-only, whatever else the URL asks for.
            match url.split_once('?') {
                Some((base, query)) => {
                    let kept: Vec<&str> = query
                        .split('&')
                        .filter(|p| !p.starts_with("mode="))
                        .chain(["mode=ro"])
                        .collect();
                    format!("{base}?{}", kept.join("&"))
                }
                None => format!("{url}?mode=ro"),
            }
        }
        Dialect::Postgres => url.to_string(),
    };
    let mut conn = AnyConnection::connect(&url)
        .await
        .context("cannot open the database")?;
    let exists = match dialect {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
        }
    };
    let tables: i64 = sqlx::query(exists)
        .fetch_one(&mut conn)
        .await
        .context("cannot read the database")?
        .try_get(0)?;
    let mut applied = BTreeMap::new();
    if tables > 0 {
        // `success` as a number: the Any driver reads no SQLite booleans.
        let rows = sqlx::query(
            "SELECT version, CAST(CASE WHEN success THEN 1 ELSE 0 END AS BIGINT), checksum \
             FROM _sqlx_migrations",
        )
        .fetch_all(&mut conn)
        .await
        .context("cannot read the applied migrations")?;
        for row in rows {
            let version: i64 = row.try_get(0)?;
            let success = row.try_get::<i64, _>(1)? == 1;
            let checksum: Vec<u8> = row.try_get(2)?;
            applied.insert(version, (success, checksum));
        }
    }
    let _ = conn.close().await;
    Ok(compare(dialect, &applied))
}

fn compare(dialect: Dialect, applied: &BTreeMap<i64, (bool, Vec<u8>)>) -> SchemaState {
    let known: BTreeMap<i64, Migration> = sources(dialect)
        .iter()
        .map(|s| (s.0, migration(s)))
        .collect();
    let (mut done, mut pending, mut failed, mut altered) = (0, Vec::new(), Vec::new(), Vec::new());
    for (version, m) in &known {
        match applied.get(version) {
            None => pending.push(format!("{version:04} {}", m.description)),
            Some((false, _)) => failed.push(*version),
            Some((true, sum)) if *sum != *m.checksum => altered.push(*version),
            Some(_) => done += 1,
        }
    }
    SchemaState::Checked {
        applied: done,
        pending,
        unknown: applied
            .keys()
            .filter(|v| !known.contains_key(v))
            .copied()
            .collect(),
        failed,
        altered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `migrations/DIR`, as (version, description, text).
    fn files(dir: &str) -> Vec<(i64, String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .map(|p| {
                let name = p.file_stem().unwrap().to_str().unwrap().to_string();
                let (version, words) = name.split_once('_').unwrap();
                let text = std::fs::read_to_string(&p).unwrap();
                (version.parse().unwrap(), words.to_string(), text)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_built_in_migrations_are_the_files_in_migrations() {
        for (dir, dialect) in [("sqlite", Dialect::Sqlite), ("postgres", Dialect::Postgres)] {
            let listed: Vec<(i64, String, String)> = sources(dialect)
                .iter()
                .map(|(v, n, sql)| (*v, n.to_string(), sql.to_string()))
                .collect();
            assert_eq!(
                listed,
                files(dir),
                "src/store/schema.rs must list every file of migrations/{dir}"
            );
        }
    }

    #[test]
    fn descriptions_and_checksums_are_the_ones_sqlx_made_from_the_files() {
        let m = migrator(Dialect::Postgres);
        let first = m.iter().next().unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(first.description, "init");
        let second = m.iter().nth(1).unwrap();
        assert_eq!(second.description, "audit log no truncate");
        // SHA-384 of the file, as sqlx's migration table stores it.
        use sha2::Digest;
        let text = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres/0001_init.sql"),
        )
        .unwrap();
        assert_eq!(&*first.checksum, &sha2::Sha384::digest(&text)[..]);
    }

    #[test]
    fn a_database_ahead_of_or_altered_from_this_build_is_not_usable() {
        let all: BTreeMap<i64, (bool, Vec<u8>)> = sources(Dialect::Sqlite)
            .iter()
            .map(|s| (s.0, (true, migration(s).checksum.to_vec())))
            .collect();
        let state = compare(Dialect::Sqlite, &all);
        assert!(state.usable());
        assert!(
            matches!(&state, SchemaState::Checked { pending, applied, .. } if pending.is_empty() && *applied == SQLITE.len())
        );

        let mut behind = all.clone();
        behind.remove(&8);
        let SchemaState::Checked { pending, .. } = compare(Dialect::Sqlite, &behind) else {
            panic!()
        };
        assert_eq!(pending, ["0008 pipelines"]);

        let mut ahead = all.clone();
        ahead.insert(99, (true, vec![1]));
        ahead.insert(2, (true, vec![0]));
        ahead.insert(3, (false, migration(&SQLITE[2]).checksum.to_vec()));
        let state = compare(Dialect::Sqlite, &ahead);
        assert!(!state.usable());
        let SchemaState::Checked {
            unknown,
            altered,
            failed,
            ..
        } = state
        else {
            panic!()
        };
        assert_eq!((unknown, altered, failed), (vec![99], vec![2], vec![3]));
    }

    #[test]
    fn sqlite_paths_come_from_the_url() {
        assert_eq!(
            sqlite_path("sqlite://tminus.db").as_deref(),
            Some("tminus.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/t.db?mode=rwc").as_deref(),
            Some("/var/lib/t.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///srv/my%20bot/t.db").as_deref(),
            Some("/srv/my bot/t.db")
        );
        assert_eq!(sqlite_path("sqlite:///a%zz%4").as_deref(), Some("/a%zz%4"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert!(check_sqlite_params("sqlite://t.db").is_ok());
        assert!(check_sqlite_params("sqlite://t.db?mode=rwc").is_ok());
        let err = check_sqlite_params("sqlite://t.db?mode=ro").unwrap_err();
        assert!(
            format!("{err}").contains("\"mode=ro\" is not supported"),
            "{err}"
        );
    }
}
