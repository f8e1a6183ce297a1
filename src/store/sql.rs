//! Statements, their arguments and the rows they answer with, the same for
//! both databases: SQLite through rusqlite, on the caller's own thread with
//! its statements kept prepared, and PostgreSQL through tokio-postgres (`pg`). The store's
//! code builds a statement once (`$1`, `$2`… placeholders, which both
//! databases read) and reads the answer through [`Row`], whichever database
//! gave it.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rusqlite::types::ValueRef;

/// One argument of a statement.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(Some(v.clone()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_string))
    }
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Int(Some(v)) => (*v).into(),
            Arg::Text(Some(v)) => v.as_str().into(),
            Arg::Int(None) | Arg::Text(None) => rusqlite::types::Null.into(),
        })
    }
}

/// One value of a row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// One row of an answer: its columns' names (shared by the rows of one
/// answer) and values.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    /// Whether the row has a column of that name (rows of different
    /// statements answered together are told apart this way).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The value of column `name`, converted, naming the column in the error.
    pub(crate) fn get<T: FromValue>(&self, name: &str) -> Result<T> {
        let at = self
            .names
            .iter()
            .position(|n| n == name)
            .with_context(|| format!("column {name} is missing"))?;
        T::from_value(&self.values[at]).map_err(|e| anyhow!("column {name}: {e}"))
    }

    /// The first column's value.
    pub(crate) fn first<T: FromValue>(&self) -> Result<T> {
        let value = self.values.first().context("a row without columns")?;
        T::from_value(value).map_err(|e| anyhow!("column {}: {e}", self.names[0]))
    }
}

/// A Rust value read from a column.
pub(crate) trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, String>;
}

fn unexpected(wanted: &str, got: &Value) -> String {
    let got = match got {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a real number",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    format!("expected {wanted}, found {got}")
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<i64, String> {
        match value {
            Value::Int(v) => Ok(*v),
            other => Err(unexpected("an integer", other)),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<String, String> {
        match value {
            Value::Text(v) => Ok(v.clone()),
            other => Err(unexpected("text", other)),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Option<T>, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Prepare `sql` on a SQLite connection (kept prepared for the next time)
/// and bind `args`: SQLite numbers the parameters in the order they first
/// appear and keeps their names, so `$N` is bound to `args[N-1]` by name.
fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    args: &[Arg],
) -> Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(sql)?;
    for index in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(index).unwrap_or_default();
        let arg = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| args.get(n.wrapping_sub(1)))
            .with_context(|| format!("no argument for parameter {name:?} of: {sql}"))?;
        stmt.raw_bind_parameter(index, arg)?;
    }
    Ok(stmt)
}

/// Run a statement that answers with no rows; how many rows it changed.
pub(crate) fn lite_exec(conn: &rusqlite::Connection, sql: &str, args: &[Arg]) -> Result<u64> {
    let mut stmt = prepare(conn, sql, args)?;
    Ok(stmt.raw_execute()? as u64)
}

/// Run a statement and read every row it answers with.
pub(crate) fn lite_rows(conn: &rusqlite::Connection, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
    let mut stmt = prepare(conn, sql, args)?;
    let names: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
    let width = names.len();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(v) => Value::Text(
                    std::str::from_utf8(v)
                        .with_context(|| format!("column {} is not UTF-8", names[i]))?
                        .to_string(),
                ),
                ValueRef::Blob(v) => Value::Blob(v.to_vec()),
            });
        }
        out.push(Row {
            names: names.clone(),
            values,
        });
    }
    Ok(out)
}

impl tokio_postgres::types::ToSql for Arg {
    /// An argument is sent as the type its statement was prepared with for
    /// it (`bigint` or `text`, by its kind: see `pg`).
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Arg::Int(Some(v)) => v.to_sql(ty, out),
            Arg::Text(Some(v)) => v.as_str().to_sql(ty, out),
            Arg::Int(None) | Arg::Text(None) => Ok(tokio_postgres::types::IsNull::Yes),
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        use tokio_postgres::types::Type;
        matches!(*ty, Type::INT8 | Type::TEXT)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// PostgreSQL's rows as [`Row`]s.
pub(crate) fn from_pg(rows: Vec<tokio_postgres::Row>) -> Result<Vec<Row>> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let names: Arc<[String]> = first
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    rows.iter()
        .map(|row| {
            let values = (0..names.len())
                .map(|i| pg_value(row, i).with_context(|| format!("column {}", names[i])))
                .collect::<Result<Vec<_>>>()?;
            Ok(Row {
                names: names.clone(),
                values,
            })
        })
        .collect()
}

fn pg_value(row: &tokio_postgres::Row, i: usize) -> Result<Value> {
    use tokio_postgres::types::{FromSql, Type};
    let ty = row.columns()[i].type_();
    let value = match *ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map(|v| Value::Real(v.into())),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        _ if <String as FromSql>::accepts(ty) => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        _ => anyhow::bail!("a value of type {ty}, which tminus does not read"),
    };
    Ok(value.unwrap_or(Value::Null))
}
